// bench_cuda_gemm: haca's custom CUDA int8 GEMM (dp4a tiles) against cuBLASLt int8
// (CUBLAS_COMPUTE_32I) on the same device buffers: TOPS of each and the ratio custom/cuBLASLt,
// both timed with CUDA events in the same run, and their int32 results compared. Without a
// usable device it says why and exits 0.
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/gemm_cublaslt.cuh"
#include "kernels/cuda/gemm_s8s8s32.cuh"

using namespace haca::kernels;

namespace {

struct shape {
  const char* name;
  int m, n, k;
};

// Best time of `reps` launches, in milliseconds, after one warm-up launch.
template <class F>
float best_ms(F&& launch, cudaStream_t stream, int reps) {
  cudaEvent_t start, stop;
  CUDA_CHECK(cudaEventCreate(&start));
  CUDA_CHECK(cudaEventCreate(&stop));
  launch();
  float best = 1e30f;
  for (int r = 0; r < reps; ++r) {
    CUDA_CHECK(cudaEventRecord(start, stream));
    launch();
    CUDA_CHECK(cudaEventRecord(stop, stream));
    CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    best = ms < best ? ms : best;
  }
  CUDA_CHECK(cudaEventDestroy(start));
  CUDA_CHECK(cudaEventDestroy(stop));
  return best;
}

} // namespace

int main() {
  const std::string& why = gpu::device_unavailable_reason();
  if (!why.empty()) {
    std::printf("bench_cuda_gemm: skipped: %s\n", why.c_str());
    return 0;
  }
  const shape shapes[] = {{"square 1024", 1024, 1024, 1024}, {"square 2048", 2048, 2048, 2048},
                          {"square 4096", 4096, 4096, 4096}, {"square 8192", 8192, 8192, 8192},
                          {"dense 784->128 b256", 256, 128, 784}, {"dense 784->128 b4096", 4096, 128, 784},
                          {"conv 16->32 b256", 50176, 32, 144}};
  std::printf("%-24s %6s %6s %6s %12s %12s %8s %6s\n", "shape", "m", "n", "k", "custom TOPS", "cuBLASLt TOPS",
              "cust/LT", "equal");
  std::mt19937_64 rng{1};
  cudaStream_t stream = gpu::thread_stream();
  try {
    for (const auto& s : shapes) {
      const int kp = gpu::round_up4(s.k), np = gpu::round_up4(s.n);
      std::vector<std::int8_t> a(static_cast<std::size_t>(s.m) * kp, 0), b(static_cast<std::size_t>(np) * kp, 0);
      for (int i = 0; i < s.m; ++i)
        for (int p = 0; p < s.k; ++p)
          a[static_cast<std::size_t>(i) * kp + p] = static_cast<std::int8_t>(static_cast<int>(rng() % 256) - 128);
      for (int j = 0; j < s.n; ++j)
        for (int p = 0; p < s.k; ++p)
          b[static_cast<std::size_t>(j) * kp + p] = static_cast<std::int8_t>(static_cast<int>(rng() % 256) - 128);
      auto da = gpu::upload(a.data(), a.size(), stream);
      auto db = gpu::upload(b.data(), b.size(), stream);
      gpu::device_buffer<std::int32_t> c_custom(static_cast<std::size_t>(s.m) * s.n, stream);
      gpu::device_buffer<std::int32_t> c_lt(static_cast<std::size_t>(s.m) * np, stream);
      const int reps = s.m * static_cast<double>(s.n) * s.k > 1e10 ? 5 : 20;
      float custom_ms = best_ms([&] { gpu::launch_gemm_s8s8s32(da.get(), db.get(), c_custom.get(), s.m, s.n, kp, stream); },
                                stream, reps);
      float lt_ms = best_ms([&] { gpu::launch_cublaslt_gemm_s8s8s32(da.get(), db.get(), c_lt.get(), s.m, np, kp, stream); },
                            stream, reps);
      std::vector<std::int32_t> hc(c_custom.size()), hl(c_lt.size());
      gpu::download_and_sync(hc.data(), c_custom.get(), hc.size(), stream);
      gpu::download_and_sync(hl.data(), c_lt.get(), hl.size(), stream);
      bool equal = true;
      for (int i = 0; i < s.m && equal; ++i)
        for (int j = 0; j < s.n; ++j)
          if (hc[static_cast<std::size_t>(i) * s.n + j] != hl[static_cast<std::size_t>(i) * np + j]) {
            equal = false;
            break;
          }
      const double ops = 2.0 * s.m * s.n * s.k;
      std::printf("%-24s %6d %6d %6d %12.1f %12.1f %8.2f %6s\n", s.name, s.m, s.n, s.k, ops / custom_ms / 1e9,
                  ops / lt_ms / 1e9, lt_ms / custom_ms, equal ? "yes" : "NO");
    }
  } catch (const std::exception& e) {
    std::printf("bench_cuda_gemm: failed: %s\n", e.what());
    return 1;
  }
  return 0;
}
