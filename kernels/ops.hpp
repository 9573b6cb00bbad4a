#pragma once
// Integer-only ops. Integer sums are exact in any order, so every backend that implements
// these gives identical bytes; `reference` is the plain-loop oracle.
#include <cstdint>

namespace haca::kernels {

// gemmlowp-style fixed-point requantization: multiplier in [2^30, 2^31) represents a real
// factor in [0.5, 1); the result is SaturatingRoundingDoublingHighMul(acc, multiplier) then a
// rounding right shift by `shift` (round half away from zero), saturated to int8.
std::int32_t saturating_rounding_doubling_high_mul(std::int32_t a, std::int32_t b);
std::int32_t rounding_divide_by_pot(std::int32_t x, int exponent);
std::int8_t requantize(std::int32_t acc, std::int32_t multiplier, int shift);

// Converts a real scale in (0, 1) into (multiplier, shift) with scale ~= multiplier/2^31 / 2^shift.
void quantize_multiplier(double scale, std::int32_t& multiplier, int& shift);

// A backend: one function per op (see ggml's backend interface).
struct backend {
  const char* name;
  // C[m][n] = sum_k A[m][k] * B[n][k]  (A: M x K activations, B: N x K weights, row-major)
  void (*gemm_s8s8s32)(const std::int8_t* a, const std::int8_t* b, std::int32_t* c, int m, int n, int k);
  // out[m][n] = requantize(acc[m][n] + bias[n]), then max(0, .) when relu
  void (*bias_requant)(const std::int32_t* acc, const std::int32_t* bias, std::int8_t* out, int m, int n,
                       std::int32_t multiplier, int shift, bool relu);
};

const backend& reference_backend();

// Index of the largest value in each row (first one on ties).
void argmax_rows(const std::int8_t* x, int rows, int cols, std::int32_t* out);

} // namespace haca::kernels
