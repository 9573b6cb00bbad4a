#include "kernels/ops.hpp"

#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

namespace haca::kernels {

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

// The oracle: the most obvious loops, so that a reader can check them by eye. Every other backend
// is tested against these bytes.
//
// Sums use 32-bit wrap-around (unsigned arithmetic, no UB), which is what int32 hardware
// accumulators do. The loader caps k (products per output) at 131071, so 2^14 * k < 2^31 and
// the dot product itself never wraps; only `acc + bias` can, and every backend must wrap it the
// same way.
std::int32_t wrap_add(std::int32_t a, std::int32_t b) {
  return static_cast<std::int32_t>(static_cast<std::uint32_t>(a) + static_cast<std::uint32_t>(b));
}

std::int32_t product(std::int8_t a, std::int8_t b) {
  return static_cast<std::int32_t>(a) * static_cast<std::int32_t>(b); // |a*b| <= 2^14: exact
}

std::int8_t epilogue(std::int32_t acc, std::int32_t bias, const requant_params& rq) {
  return bias_requant_relu(acc, bias, rq.multiplier, rq.shift, rq.relu);
}

std::string always_usable() { return {}; }

void reference_gemm(const std::int8_t* a, const std::int8_t* b, std::int32_t* c, int m, int n, int k) {
  for (int i = 0; i < m; ++i) {
    const std::int8_t* ar = a + static_cast<std::size_t>(i) * k;
    for (int j = 0; j < n; ++j) {
      const std::int8_t* br = b + static_cast<std::size_t>(j) * k;
      std::int32_t acc = 0;
      for (int p = 0; p < k; ++p) acc = wrap_add(acc, product(ar[p], br[p]));
      c[static_cast<std::size_t>(i) * n + j] = acc;
    }
  }
}

// The reference "packing" is a plain copy of b (n x k, row-major).
packed_weights reference_pack(const std::int8_t* b, int n, int k) {
  const std::size_t size = static_cast<std::size_t>(n) * static_cast<std::size_t>(k);
  return std::make_shared<const std::vector<std::int8_t>>(b, b + size);
}

const std::int8_t* unpacked(const packed_weights& w) {
  return static_cast<const std::vector<std::int8_t>*>(w.get())->data();
}

void reference_dense(const std::int8_t* a, int m, const packed_weights& packed, int n, int k, const std::int32_t* bias,
                     requant_params rq, std::int8_t* out) {
  const std::int8_t* b = unpacked(packed);
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) {
      std::int32_t acc = 0;
      for (int p = 0; p < k; ++p)
        acc = wrap_add(acc, product(a[static_cast<std::size_t>(i) * k + p], b[static_cast<std::size_t>(j) * k + p]));
      out[static_cast<std::size_t>(i) * n + j] = epilogue(acc, bias[j], rq);
    }
}

void reference_conv2d(const std::int8_t* in, int batch, const packed_weights& packed, const std::int32_t* bias,
                      const conv2d_shape& s, requant_params rq, std::int8_t* out) {
  const std::int8_t* w = unpacked(packed);
  const int oh = s.out_h(), ow = s.out_w();
  for (int b = 0; b < batch; ++b)
    for (int oc = 0; oc < s.out_c; ++oc)
      for (int oy = 0; oy < oh; ++oy)
        for (int ox = 0; ox < ow; ++ox) {
          std::int32_t acc = 0;
          for (int ic = 0; ic < s.in_c; ++ic)
            for (int ky = 0; ky < s.kernel_h; ++ky)
              for (int kx = 0; kx < s.kernel_w; ++kx) {
                const int iy = oy * s.stride - s.pad + ky, ix = ox * s.stride - s.pad + kx;
                if (iy < 0 || iy >= s.in_h || ix < 0 || ix >= s.in_w) continue; // zero padding
                const std::size_t in_idx = ((static_cast<std::size_t>(b) * s.in_c + ic) * s.in_h + iy) * s.in_w + ix;
                const std::size_t w_idx = ((static_cast<std::size_t>(oc) * s.in_c + ic) * s.kernel_h + ky) * s.kernel_w + kx;
                acc = wrap_add(acc, product(in[in_idx], w[w_idx]));
              }
          const std::size_t out_idx = ((static_cast<std::size_t>(b) * s.out_c + oc) * oh + oy) * ow + ox;
          out[out_idx] = epilogue(acc, bias[oc], rq);
        }
}

void reference_maxpool(const std::int8_t* in, int batch, const maxpool_shape& s, std::int8_t* out) {
  const int oh = s.out_h(), ow = s.out_w();
  for (int b = 0; b < batch; ++b)
    for (int c = 0; c < s.channels; ++c)
      for (int oy = 0; oy < oh; ++oy)
        for (int ox = 0; ox < ow; ++ox) {
          std::int8_t best = std::numeric_limits<std::int8_t>::min();
          for (int ky = 0; ky < s.kernel; ++ky)
            for (int kx = 0; kx < s.kernel; ++kx) {
              const int iy = oy * s.stride + ky, ix = ox * s.stride + kx;
              const std::int8_t v = in[((static_cast<std::size_t>(b) * s.channels + c) * s.in_h + iy) * s.in_w + ix];
              if (v > best) best = v;
            }
          out[((static_cast<std::size_t>(b) * s.channels + c) * oh + oy) * ow + ox] = best;
        }
}

} // namespace

const backend& reference_backend() {
  static const backend be{"reference",       &always_usable,    &reference_gemm,   &reference_pack,
                          &reference_dense,  &reference_conv2d, &reference_maxpool};
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

void quantize_pixels(const std::uint8_t* pixels, std::size_t n, std::int8_t* out) {
  for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<std::int8_t>((static_cast<int>(pixels[i]) * 127 + 127) / 255);
}

} // namespace haca::kernels
