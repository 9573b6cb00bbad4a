#include "kernels/cuda/dense.cuh"

#include <stdexcept>

#include "kernels/cuda/gemm_s8s8s32.cuh"

namespace haca::kernels::gpu {

namespace {

constexpr int epilogue_threads = 256;

__global__ void bias_requant_kernel(const std::int32_t* __restrict__ acc, int ldc, int m, int n,
                                    requant_store store) {
  const std::size_t total = static_cast<std::size_t>(m) * n;
  for (std::size_t idx = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const int i = static_cast<int>(idx / n);
    const int j = static_cast<int>(idx % n);
    store(i, j, acc[static_cast<std::size_t>(i) * ldc + j]);
  }
}

void check_hw(int m, int hw) {
  if (hw < 1 || m % hw != 0) throw std::invalid_argument("dense epilogue: rows must be whole images (m % hw == 0)");
}

} // namespace

unsigned grid_stride_blocks(std::size_t total, int threads) {
  const std::size_t blocks = (total + static_cast<std::size_t>(threads) - 1) / static_cast<std::size_t>(threads);
  constexpr std::size_t cap = std::size_t{1} << 20; // enough to fill any GPU; the loop covers the rest
  return static_cast<unsigned>(blocks < cap ? blocks : cap);
}

void launch_dense(const std::int8_t* a, const std::int8_t* b, const std::int32_t* bias, requant_args rq,
                  std::int8_t* out, int m, int n, int kp, int hw, cudaStream_t stream) {
  const dim3 grid = gemm_grid(m, n, kp);
  check_hw(m, hw);
  if (m == 0 || n == 0) return;
  gemm_s8_tiled_kernel<<<grid, gemm_threads, 0, stream>>>(reinterpret_cast<const std::int32_t*>(a),
                                                           reinterpret_cast<const std::int32_t*>(b), m, n, kp / 4,
                                                           requant_store{out, bias, rq, n, hw});
  CUDA_CHECK_LAUNCH();
}

void launch_bias_requant(const std::int32_t* acc, int ldc, const std::int32_t* bias, requant_args rq,
                         std::int8_t* out, int m, int n, int hw, cudaStream_t stream) {
  check_hw(m, hw);
  if (ldc < n) throw std::invalid_argument("bias_requant: ldc < n");
  const std::size_t total = static_cast<std::size_t>(m) * n;
  if (total == 0) return;
  bias_requant_kernel<<<grid_stride_blocks(total, epilogue_threads), epilogue_threads, 0, stream>>>(
      acc, ldc, m, n, requant_store{out, bias, rq, n, hw});
  CUDA_CHECK_LAUNCH();
}

} // namespace haca::kernels::gpu
