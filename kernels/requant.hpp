#pragma once
// gemmlowp-style fixed-point requantization: the one definition every backend uses, host and
// device alike (nvcc compiles it as __host__ __device__), so no backend can round differently.
// A multiplier in [2^30, 2^31) represents a real factor in [0.5, 1); the result is
// SaturatingRoundingDoublingHighMul(acc, multiplier), then a rounding right shift by `shift`
// (round half away from zero), saturated to int8.
#include <cstdint>

#if defined(__CUDACC__)
#define HACA_HOST_DEVICE __host__ __device__
#else
#define HACA_HOST_DEVICE
#endif

namespace haca::kernels {

// Written out: std::numeric_limits is not usable in device code without extra nvcc flags.
inline constexpr std::int32_t int32_min_value = -2147483647 - 1;
inline constexpr std::int32_t int32_max_value = 2147483647;

HACA_HOST_DEVICE inline std::int32_t saturating_rounding_doubling_high_mul(std::int32_t a, std::int32_t b) {
  const bool overflow = a == b && a == int32_min_value;
  const std::int64_t ab = static_cast<std::int64_t>(a) * static_cast<std::int64_t>(b);
  const std::int64_t nudge = ab >= 0 ? (std::int64_t{1} << 30) : (1 - (std::int64_t{1} << 30));
  // Division truncates toward zero, as in gemmlowp.
  const auto high = static_cast<std::int32_t>((ab + nudge) / (std::int64_t{1} << 31));
  return overflow ? int32_max_value : high;
}

HACA_HOST_DEVICE inline std::int32_t rounding_divide_by_pot(std::int32_t x, int exponent) {
  if (exponent <= 0)
    return x;
  if (exponent > 31)
    exponent = 31;
  const std::int64_t mask = (std::int64_t{1} << exponent) - 1;
  const std::int64_t remainder = static_cast<std::int64_t>(x) & mask;
  const std::int64_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  return static_cast<std::int32_t>((static_cast<std::int64_t>(x) >> exponent) + (remainder > threshold ? 1 : 0));
}

HACA_HOST_DEVICE inline std::int8_t requantize(std::int32_t acc, std::int32_t multiplier, int shift) {
  std::int32_t v = rounding_divide_by_pot(saturating_rounding_doubling_high_mul(acc, multiplier), shift);
  if (v > 127)
    v = 127;
  if (v < -128)
    v = -128;
  return static_cast<std::int8_t>(v);
}

// The epilogue of every weighted layer: the bias is added with 32-bit wrap-around (through
// unsigned, so no undefined behaviour), then requantize, then ReLU.
HACA_HOST_DEVICE inline std::int8_t bias_requant_relu(std::int32_t acc, std::int32_t bias, std::int32_t multiplier,
                                                      int shift, bool relu) {
  const auto sum = static_cast<std::int32_t>(static_cast<std::uint32_t>(acc) + static_cast<std::uint32_t>(bias));
  std::int8_t v = requantize(sum, multiplier, shift);
  if (relu && v < 0)
    v = 0;
  return v;
}

} // namespace haca::kernels
