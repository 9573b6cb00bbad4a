#include "kernels/cuda/gemm_s8s8s32.cuh"

#include <stdexcept>
#include <string>

#include "kernels/cuda/common.cuh"

namespace haca::kernels::gpu {

dim3 gemm_grid(int m, int n, int kp) {
  if (m < 0 || n < 0 || kp < 0 || kp % 4 != 0)
    throw std::invalid_argument("gemm: bad shape m=" + std::to_string(m) + " n=" + std::to_string(n) +
                                " kp=" + std::to_string(kp) + " (kp must be a multiple of 4)");
  const long long tiles_m = (static_cast<long long>(m) + gemm_tile_m - 1) / gemm_tile_m;
  const long long tiles_n = (static_cast<long long>(n) + gemm_tile_n - 1) / gemm_tile_n;
  if (tiles_n > 65535 || static_cast<long long>(m) + gemm_tile_m > 2147483647LL)
    throw std::invalid_argument("gemm: shape too large for one launch (m=" + std::to_string(m) +
                                ", n=" + std::to_string(n) + ")");
  return dim3(static_cast<unsigned>(tiles_m), static_cast<unsigned>(tiles_n), 1);
}

void launch_gemm_s8s8s32(const std::int8_t* a, const std::int8_t* b, std::int32_t* c, int m, int n, int kp,
                         cudaStream_t stream) {
  const dim3 grid = gemm_grid(m, n, kp);
  if (m == 0 || n == 0) return;
  // Rows are kp bytes, kp % 4 == 0, and the buffers come from cudaMalloc*: 4-byte aligned words.
  gemm_s8_tiled_kernel<<<grid, gemm_threads, 0, stream>>>(reinterpret_cast<const std::int32_t*>(a),
                                                           reinterpret_cast<const std::int32_t*>(b), m, n, kp / 4,
                                                           int32_store{c, n});
  CUDA_CHECK_LAUNCH();
}

} // namespace haca::kernels::gpu
