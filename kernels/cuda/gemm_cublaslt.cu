#include "kernels/cuda/gemm_cublaslt.cuh"

#include <stdexcept>
#include <string>

#include "kernels/cuda/common.cuh"

namespace haca::kernels::gpu {

namespace {

// Owners of the cuBLASLt descriptors (destroyed even when a later call throws).
struct matmul_desc {
  cublasLtMatmulDesc_t d = nullptr;
  ~matmul_desc() {
    if (d != nullptr) (void)cublasLtMatmulDescDestroy(d);
  }
};
struct matrix_layout {
  cublasLtMatrixLayout_t d = nullptr;
  ~matrix_layout() {
    if (d != nullptr) (void)cublasLtMatrixLayoutDestroy(d);
  }
};
struct matmul_preference {
  cublasLtMatmulPreference_t d = nullptr;
  ~matmul_preference() {
    if (d != nullptr) (void)cublasLtMatmulPreferenceDestroy(d);
  }
};

} // namespace

void launch_cublaslt_gemm_s8s8s32(const std::int8_t* a, const std::int8_t* b, std::int32_t* c, int m, int np, int kp,
                                  cudaStream_t stream) {
  if (m < 0 || np < 0 || kp < 0 || np % 4 != 0 || kp % 4 != 0)
    throw std::invalid_argument("cuBLASLt gemm: bad shape m=" + std::to_string(m) + " np=" + std::to_string(np) +
                                " kp=" + std::to_string(kp) + " (np and kp must be multiples of 4)");
  if (m == 0 || np == 0) return;
  if (kp == 0) { // an empty sum; cuBLASLt is not asked about K = 0
    CUDA_CHECK(cudaMemsetAsync(c, 0, static_cast<std::size_t>(m) * np * sizeof(std::int32_t), stream));
    return;
  }
  void* workspace = nullptr;
  std::size_t workspace_bytes = 0;
  cublasLtHandle_t lt = thread_cublaslt(&workspace, &workspace_bytes);

  matmul_desc op;
  CUBLAS_CHECK(cublasLtMatmulDescCreate(&op.d, CUBLAS_COMPUTE_32I, CUDA_R_32I));
  const cublasOperation_t trans_a = CUBLAS_OP_T; // cuBLAS "A" = our weights, used transposed
  const cublasOperation_t trans_b = CUBLAS_OP_N; // cuBLAS "B" = our activations
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op.d, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof(trans_a)));
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op.d, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b, sizeof(trans_b)));

  // Stored (pre-op) shapes, column-major; see the header for the derivation.
  matrix_layout weights_layout, act_layout, out_layout;
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&weights_layout.d, CUDA_R_8I, static_cast<std::uint64_t>(kp),
                                          static_cast<std::uint64_t>(np), kp));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&act_layout.d, CUDA_R_8I, static_cast<std::uint64_t>(kp),
                                          static_cast<std::uint64_t>(m), kp));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&out_layout.d, CUDA_R_32I, static_cast<std::uint64_t>(np),
                                          static_cast<std::uint64_t>(m), np));

  matmul_preference pref;
  CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref.d));
  const std::uint64_t max_workspace = workspace_bytes;
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.d, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &max_workspace,
                                                    sizeof(max_workspace)));
  cublasLtMatmulHeuristicResult_t heuristic{};
  int found = 0;
  CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(lt, op.d, weights_layout.d, act_layout.d, out_layout.d, out_layout.d,
                                              pref.d, 1, &heuristic, &found));
  if (found < 1)
    throw std::runtime_error("cuBLASLt offers no int8 algorithm for M=" + std::to_string(np) + " N=" +
                             std::to_string(m) + " K=" + std::to_string(kp) + " (TN, CUBLAS_COMPUTE_32I)");

  // Integer sums are exact and wrap mod 2^32, so whichever algorithm (split-K included) gives
  // the same bits as the reference.
  const std::int32_t alpha = 1;
  const std::int32_t beta = 0;
  CUBLAS_CHECK(cublasLtMatmul(lt, op.d, &alpha, b, weights_layout.d, a, act_layout.d, &beta, c, out_layout.d, c,
                              out_layout.d, &heuristic.algo, workspace, workspace_bytes, stream));
}

} // namespace haca::kernels::gpu
