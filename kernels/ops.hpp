#pragma once
// Integer-only ops. Integer sums are exact in any order, so every backend that implements
// these gives identical bytes; `reference` is the plain-loop oracle.
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/requant.hpp"

namespace haca::kernels {


// Converts a real scale in (0, 1) into (multiplier, shift) with scale ~= multiplier/2^31 / 2^shift.
void quantize_multiplier(double scale, std::int32_t& multiplier, int& shift);

// The epilogue every weighted layer ends with: out = requantize(acc + bias), then max(0, .)
// when relu.
struct requant_params {
  std::int32_t multiplier = std::int32_t{1} << 30;
  int shift = 0;
  bool relu = false;
};

// Images are NCHW int8; weights [out_c][in_c][kernel_h][kernel_w]. Zero padding.
struct conv2d_shape {
  int in_c = 0, in_h = 0, in_w = 0;
  int out_c = 0, kernel_h = 0, kernel_w = 0;
  int stride = 1, pad = 0;
  int out_h() const { return (in_h + 2 * pad - kernel_h) / stride + 1; }
  int out_w() const { return (in_w + 2 * pad - kernel_w) / stride + 1; }
};

// Max over kernel x kernel windows with the given stride, no padding, per channel.
struct maxpool_shape {
  int channels = 0, in_h = 0, in_w = 0;
  int kernel = 2, stride = 2;
  int out_h() const { return (in_h - kernel) / stride + 1; }
  int out_w() const { return (in_w - kernel) / stride + 1; }
};

// Weights in whatever layout (and memory) a backend's kernels want, made once at model load.
using packed_weights = std::shared_ptr<const void>;

// A backend: one function per op (as in ggml). All pointers are host memory; a device backend
// copies in and out itself.
struct backend {
  const char* name;
  // "" when usable here, else why not (no AVX-512 VNNI, no CUDA device, ...).
  std::string (*unavailable_reason)();
  // c[m][n] = sum_k a[m][k] * b[n][k]   (a: m x k activations, b: n x k weights, row-major)
  void (*gemm_s8s8s32)(const std::int8_t* a, const std::int8_t* b, std::int32_t* c, int m, int n, int k);
  // Packs b (n x k, row-major) for dense / conv2d.
  packed_weights (*pack_weights)(const std::int8_t* b, int n, int k);
  // out[m][n] = epilogue(sum_k a[m][k] * b[n][k] + bias[n])
  void (*dense)(const std::int8_t* a, int m, const packed_weights& b, int n, int k, const std::int32_t* bias,
                requant_params rq, std::int8_t* out);
  // batch images: in [batch][in_c][in_h][in_w] -> out [batch][out_c][out_h][out_w]; w packed
  // with pack_weights(w, out_c, in_c * kernel_h * kernel_w).
  void (*conv2d)(const std::int8_t* in, int batch, const packed_weights& w, const std::int32_t* bias,
                 const conv2d_shape& s, requant_params rq, std::int8_t* out);
  void (*maxpool)(const std::int8_t* in, int batch, const maxpool_shape& s, std::int8_t* out);
};

const backend& reference_backend();
// Every backend compiled in, fastest first, reference last; each says whether it can run here.
std::vector<const backend*> compiled_backends();
// The usable ones, fastest first (reference is always usable).
std::vector<const backend*> usable_backends();
const backend* find_backend(std::string_view name); // nullptr if unknown or unusable

// Index of the largest value in each row (first one on ties).
void argmax_rows(const std::int8_t* x, int rows, int cols, std::int32_t* out);

// uint8 pixels -> int8 model inputs: q = (p * 127 + 127) / 255 (integer division), so 0 -> 0 and
// 255 -> 127; the real value p / 255 is q / 127 (input scale 1/127).
void quantize_pixels(const std::uint8_t* pixels, std::size_t n, std::int8_t* out);

} // namespace haca::kernels
