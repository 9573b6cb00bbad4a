#pragma once
// Dense (and the GEMM half of conv2d): the tiled dp4a GEMM of gemm_s8s8s32.cuh with the fused
// epilogue out = relu?(requantize(acc + bias[j])) written as int8, and the same epilogue as a
// standalone kernel over an int32 matrix (for the cuBLASLt backend).
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/common.cuh"

namespace haca::kernels::gpu {

// out[b][j][p] with i = b * hw + p (hw = 1: out is m x n row-major) from
// a (m x kp) * b (>= n rows x kp)^T + bias; all device pointers, bias may be null.
void launch_dense(const std::int8_t* a, const std::int8_t* b, const std::int32_t* bias, requant_args rq,
                  std::int8_t* out, int m, int n, int kp, int hw, cudaStream_t stream);

// The same epilogue over acc (m rows, row pitch ldc >= n int32s) already in device memory.
void launch_bias_requant(const std::int32_t* acc, int ldc, const std::int32_t* bias, requant_args rq,
                         std::int8_t* out, int m, int n, int hw, cudaStream_t stream);

// Grid size for a grid-stride loop over `total` elements with `threads` per block.
unsigned grid_stride_blocks(std::size_t total, int threads);

} // namespace haca::kernels::gpu
