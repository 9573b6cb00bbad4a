#include "kernels/ops.hpp"

#include <cmath>
#include <cstdint>
#include <limits>

namespace haca::kernels {

std::int32_t saturating_rounding_doubling_high_mul(std::int32_t a, std::int32_t b) {
  const bool overflow = a == b && a == std::numeric_limits<std::int32_t>::min();
  const std::int64_t ab = static_cast<std::int64_t>(a) * static_cast<std::int64_t>(b);
  const std::int64_t nudge = ab >= 0 ? (std::int64_t{1} << 30) : (1 - (std::int64_t{1} << 30));
  // Division truncates toward zero, as in gemmlowp.
  const auto high = static_cast<std::int32_t>((ab + nudge) / (std::int64_t{1} << 31));
  return overflow ? std::numeric_limits<std::int32_t>::max() : high;
}

std::int32_t rounding_divide_by_pot(std::int32_t x, int exponent) {
  if (exponent <= 0) return x;
  if (exponent > 31) exponent = 31;
  const std::int64_t mask = (std::int64_t{1} << exponent) - 1;
  const std::int64_t remainder = static_cast<std::int64_t>(x) & mask;
  const std::int64_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  return static_cast<std::int32_t>((static_cast<std::int64_t>(x) >> exponent) + (remainder > threshold ? 1 : 0));
}

std::int8_t requantize(std::int32_t acc, std::int32_t multiplier, int shift) {
  std::int32_t v = rounding_divide_by_pot(saturating_rounding_doubling_high_mul(acc, multiplier), shift);
  if (v > 127) v = 127;
  if (v < -128) v = -128;
  return static_cast<std::int8_t>(v);
}

void quantize_multiplier(double scale, std::int32_t& multiplier, int& shift) {
  if (!(scale > 0.0)) { // zero, negative or NaN: the smallest valid factor
    multiplier = std::int32_t{1} << 30;
    shift = 31;
    return;
  }
  if (scale >= 1.0) { // out of contract: the largest valid factor
    multiplier = std::numeric_limits<std::int32_t>::max();
    shift = 0;
    return;
  }
  int exp = 0;
  const double q = std::frexp(scale, &exp); // scale = q * 2^exp, q in [0.5, 1), exp <= 0
  auto q_fixed = static_cast<std::int64_t>(std::llround(q * static_cast<double>(std::int64_t{1} << 31)));
  if (q_fixed == (std::int64_t{1} << 31)) {
    q_fixed /= 2;
    ++exp;
  }
  shift = -exp;
  if (shift < 0) { // rounding reached 1.0
    multiplier = std::numeric_limits<std::int32_t>::max();
    shift = 0;
    return;
  }
  if (shift > 31) shift = 31; // tinier than 2^-32: saturate at the smallest factor the format holds
  multiplier = static_cast<std::int32_t>(q_fixed);
}

namespace {

// Accumulate with 32-bit wrap-around, which is what int32 hardware accumulators do; it keeps
// every backend byte-identical even in the (loader-excluded) overflow case, without UB.
void reference_gemm(const std::int8_t* a, const std::int8_t* b, std::int32_t* c, int m, int n, int k) {
  for (int i = 0; i < m; ++i) {
    const std::int8_t* ar = a + static_cast<std::size_t>(i) * k;
    for (int j = 0; j < n; ++j) {
      const std::int8_t* br = b + static_cast<std::size_t>(j) * k;
      std::uint32_t acc = 0;
      for (int p = 0; p < k; ++p)
        acc += static_cast<std::uint32_t>(static_cast<std::int32_t>(ar[p]) * static_cast<std::int32_t>(br[p]));
      c[static_cast<std::size_t>(i) * n + j] = static_cast<std::int32_t>(acc);
    }
  }
}

void reference_bias_requant(const std::int32_t* acc, const std::int32_t* bias, std::int8_t* out, int m, int n,
                            std::int32_t multiplier, int shift, bool relu) {
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < n; ++j) {
      const std::size_t idx = static_cast<std::size_t>(i) * n + j;
      const auto sum = static_cast<std::int32_t>(static_cast<std::uint32_t>(acc[idx]) +
                                                 static_cast<std::uint32_t>(bias[j]));
      std::int8_t v = requantize(sum, multiplier, shift);
      if (relu && v < 0) v = 0;
      out[idx] = v;
    }
  }
}

} // namespace

const backend& reference_backend() {
  static const backend be{"reference", &reference_gemm, &reference_bias_requant};
  return be;
}

void argmax_rows(const std::int8_t* x, int rows, int cols, std::int32_t* out) {
  for (int i = 0; i < rows; ++i) {
    const std::int8_t* row = x + static_cast<std::size_t>(i) * cols;
    std::int32_t best = 0;
    for (int j = 1; j < cols; ++j)
      if (row[j] > row[best]) best = j;
    out[i] = best;
  }
}

} // namespace haca::kernels
