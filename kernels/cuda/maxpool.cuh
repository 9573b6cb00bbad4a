#pragma once
// Max pooling, one thread per output element (grid-stride): out[b][c][oy][ox] = max over the
// kernel x kernel window at (oy * stride, ox * stride); no padding. Shared by both backends.
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "kernels/cuda/common.cuh"
#include "kernels/ops.hpp"

namespace haca::kernels::gpu {

struct pool_geometry {
  int in_h, in_w, kernel, stride, out_h, out_w;
};
pool_geometry make_pool_geometry(const maxpool_shape& s); // validates

// Output element idx of [planes][out_h][out_w] (plane = b * channels + c).
__host__ __device__ inline std::int8_t maxpool_value(const std::int8_t* in, const pool_geometry& g, std::size_t idx) {
  const int ox = static_cast<int>(idx % static_cast<std::size_t>(g.out_w));
  const std::size_t t = idx / static_cast<std::size_t>(g.out_w);
  const int oy = static_cast<int>(t % static_cast<std::size_t>(g.out_h));
  const std::size_t plane = t / static_cast<std::size_t>(g.out_h);
  const std::int8_t* base = in + plane * static_cast<std::size_t>(g.in_h) * g.in_w;
  std::int8_t best = -128;
  for (int ky = 0; ky < g.kernel; ++ky)
    for (int kx = 0; kx < g.kernel; ++kx) {
      const std::int8_t v = base[static_cast<std::size_t>(oy * g.stride + ky) * g.in_w + (ox * g.stride + kx)];
      if (v > best) best = v;
    }
  return best;
}

// out (planes x out_h x out_w) from in (planes x in_h x in_w), device pointers.
void launch_maxpool(const std::int8_t* in, std::size_t planes, const pool_geometry& g, std::int8_t* out,
                    cudaStream_t stream);

// The host entry point both backends use: copy in, launch, copy out, synchronize; errors are
// thrown prefixed with "<backend> backend, maxpool: ".
void maxpool_host(const char* backend, const std::int8_t* in, int batch, const maxpool_shape& s, std::int8_t* out);

// The host side of dense and conv2d, shared by both CUDA backends: checks, uploads, im2col for
// conv, then `step` (what differs: a fused custom kernel, or cuBLASLt then the epilogue kernel)
// turns device activations a (m x kp) and the packed weights into int8 outputs; then download.
using gemm_epilogue_fn = void (*)(const std::int8_t* a, const device_weights& w, const std::int32_t* bias, int m,
                                  int hw, requant_params rq, std::int8_t* out, cudaStream_t stream);
void dense_host(const char* backend, void (*require)(), gemm_epilogue_fn step, const std::int8_t* a, int m,
                const packed_weights& b, int n, int k, const std::int32_t* bias, requant_params rq, std::int8_t* out);
void conv2d_host(const char* backend, void (*require)(), gemm_epilogue_fn step, const std::int8_t* in, int batch,
                 const packed_weights& wp, const std::int32_t* bias, const conv2d_shape& s, requant_params rq,
                 std::int8_t* out);

// cudaFuncGetAttributes on the maxpool kernel: fails when the device cannot run this build's
// code (used by the availability check).
cudaError_t maxpool_kernel_attributes(cudaFuncAttributes* attr);

} // namespace haca::kernels::gpu
