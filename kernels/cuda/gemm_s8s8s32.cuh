#pragma once
// Tiled int8 GEMM on CUDA cores with dp4a: c[i][j] = sum_p a[i][p] * b[j][p] (both operands
// row-major with k padded with zeros to kp, a multiple of 4, so each row is a run of 32-bit
// words holding 4 consecutive k values). Integer sums are exact, and dp4a wraps mod 2^32 like
// the reference's uint32 accumulator, so the result is bit-identical in any summation order.
//
// Block: 256 threads compute a 64 x 64 tile of c; each k step stages 64 rows x 8 words (32 k
// values) of a and of b in shared memory, stored word-major ([w][row]) so the inner loop reads
// one word per row. Thread t owns rows ty + 16 r and columns tx + 16 c (r, c in 0..3) with
// tx = t % 16, ty = t / 16, so neighbouring threads store neighbouring columns.
//
// The per-thread steps are __host__ __device__ functions so self_test.cu can run the same
// index math on the host (an emulation of a block, thread by thread, phase by phase).
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

// Unrolling hint for the device pass only (the host compiler would warn about the pragma).
#ifdef __CUDA_ARCH__
#define HACA_UNROLL _Pragma("unroll")
#else
#define HACA_UNROLL
#endif

namespace haca::kernels::gpu {

constexpr int gemm_tile_m = 64;
constexpr int gemm_tile_n = 64;
constexpr int gemm_tile_kw = 8; // 32-bit words of k per step (32 int8 values)
constexpr int gemm_threads = 256;
constexpr int gemm_per_thread = 4; // rows (and columns) per thread: 16 threads x 4 = 64

struct gemm_tile_smem {
  std::int32_t a[gemm_tile_kw][gemm_tile_m];
  std::int32_t b[gemm_tile_kw][gemm_tile_n];
};

// Four signed 8-bit products summed into c with 32-bit wrap-around.
__host__ __device__ inline std::int32_t dot4_s8(std::int32_t a, std::int32_t b, std::int32_t c) {
#ifdef __CUDA_ARCH__
  return __dp4a(a, b, c);
#else
  auto acc = static_cast<std::uint32_t>(c);
  for (int q = 0; q < 4; ++q) {
    const auto ab = static_cast<std::int8_t>(static_cast<std::uint32_t>(a) >> (8 * q));
    const auto bb = static_cast<std::int8_t>(static_cast<std::uint32_t>(b) >> (8 * q));
    acc += static_cast<std::uint32_t>(static_cast<std::int32_t>(ab) * static_cast<std::int32_t>(bb));
  }
  return static_cast<std::int32_t>(acc);
#endif
}

// Stages words [w0, w0 + 8) of rows [row0, row0 + 64) of a and [col0, col0 + 64) of b.
// Out-of-range rows and words read as 0, which adds nothing.
__host__ __device__ inline void gemm_load_tiles(gemm_tile_smem& s, int tid, const std::int32_t* a32,
                                                const std::int32_t* b32, int m, int n, int kw, int row0, int col0,
                                                int w0) {
  for (int l = tid; l < gemm_tile_m * gemm_tile_kw; l += gemm_threads) {
    const int r = l / gemm_tile_kw;
    const int w = l % gemm_tile_kw;
    const int gi = row0 + r;
    const int gw = w0 + w;
    s.a[w][r] = (gi < m && gw < kw) ? a32[static_cast<std::size_t>(gi) * kw + gw] : 0;
  }
  for (int l = tid; l < gemm_tile_n * gemm_tile_kw; l += gemm_threads) {
    const int r = l / gemm_tile_kw;
    const int w = l % gemm_tile_kw;
    const int gj = col0 + r;
    const int gw = w0 + w;
    s.b[w][r] = (gj < n && gw < kw) ? b32[static_cast<std::size_t>(gj) * kw + gw] : 0;
  }
}

__host__ __device__ inline void gemm_accumulate_tiles(const gemm_tile_smem& s, int tid,
                                                      std::int32_t (&acc)[gemm_per_thread][gemm_per_thread]) {
  const int tx = tid % 16;
  const int ty = tid / 16;
HACA_UNROLL
  for (int w = 0; w < gemm_tile_kw; ++w) {
    std::int32_t av[gemm_per_thread];
    std::int32_t bv[gemm_per_thread];
HACA_UNROLL
    for (int r = 0; r < gemm_per_thread; ++r) av[r] = s.a[w][ty + 16 * r];
HACA_UNROLL
    for (int c = 0; c < gemm_per_thread; ++c) bv[c] = s.b[w][tx + 16 * c];
HACA_UNROLL
    for (int r = 0; r < gemm_per_thread; ++r)
HACA_UNROLL
      for (int c = 0; c < gemm_per_thread; ++c) acc[r][c] = dot4_s8(av[r], bv[c], acc[r][c]);
  }
}

template <class Store>
__host__ __device__ inline void gemm_store_tile(const Store& store, int tid, int row0, int col0, int m, int n,
                                                const std::int32_t (&acc)[gemm_per_thread][gemm_per_thread]) {
  const int tx = tid % 16;
  const int ty = tid / 16;
HACA_UNROLL
  for (int r = 0; r < gemm_per_thread; ++r) {
    const int i = row0 + ty + 16 * r;
HACA_UNROLL
    for (int c = 0; c < gemm_per_thread; ++c) {
      const int j = col0 + tx + 16 * c;
      if (i < m && j < n) store(i, j, acc[r][c]);
    }
  }
}

// Grid: x over row tiles (up to 2^31 - 1), y over column tiles (up to 65535).
// a32: m x kw words, b32: >= n rows x kw words; Store: store(i, j, acc) for i < m, j < n.
template <class Store>
__global__ void __launch_bounds__(gemm_threads)
    gemm_s8_tiled_kernel(const std::int32_t* __restrict__ a32, const std::int32_t* __restrict__ b32, int m, int n,
                         int kw, Store store) {
  __shared__ gemm_tile_smem s;
  const int tid = static_cast<int>(threadIdx.x);
  const int row0 = static_cast<int>(blockIdx.x) * gemm_tile_m;
  const int col0 = static_cast<int>(blockIdx.y) * gemm_tile_n;
  std::int32_t acc[gemm_per_thread][gemm_per_thread] = {};
  for (int w0 = 0; w0 < kw; w0 += gemm_tile_kw) {
    gemm_load_tiles(s, tid, a32, b32, m, n, kw, row0, col0, w0);
    __syncthreads();
    gemm_accumulate_tiles(s, tid, acc);
    __syncthreads(); // the next load overwrites s
  }
  gemm_store_tile(store, tid, row0, col0, m, n, acc);
}

// Checks the shape (kp % 4 == 0, grid limits) and returns the launch grid.
dim3 gemm_grid(int m, int n, int kp);

struct int32_store {
  std::int32_t* c;
  int ldc;
  __host__ __device__ void operator()(int i, int j, std::int32_t v) const {
    c[static_cast<std::size_t>(i) * ldc + j] = v;
  }
};

// c (m x n, row-major, device) = a (m x kp) * b (n x kp)^T, all device pointers, on `stream`.
void launch_gemm_s8s8s32(const std::int8_t* a, const std::int8_t* b, std::int32_t* c, int m, int n, int kp,
                         cudaStream_t stream);

} // namespace haca::kernels::gpu
