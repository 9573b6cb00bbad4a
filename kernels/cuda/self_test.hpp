#pragma once
// Self-checks of the CUDA backends against kernels::reference_backend(), for use on a GPU
// machine (and, for the emulation half, on any machine).
#include <string>

namespace haca::kernels {

// Runs every op of `cuda` and `cublaslt` (gemm_s8s8s32, pack_weights + dense, conv2d, maxpool)
// on small random cases with awkward shapes (k and n not multiples of 4, partial tiles, padding,
// stride), plus the device requantization on edge values, and compares with the reference.
// Returns "" when all match, else the first mismatch. Without a usable device it returns the
// reason ("no CUDA device: ..."), never "", so a missing GPU is never mistaken for a pass.
// Exceptions from the backends are caught and returned as text.
std::string cuda_self_test();

// Needs no GPU: runs the kernels' own __host__ __device__ building blocks (requantization, the
// dp4a GEMM block step by step for every thread, im2col, maxpool, the output index mapping) on
// the host over the same cases and compares with the reference. "" or the first mismatch.
std::string cuda_host_emulation_check();

} // namespace haca::kernels
