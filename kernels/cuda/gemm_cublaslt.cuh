#pragma once
// int8 GEMM through cuBLASLt (CUBLAS_COMPUTE_32I, int8 in, int32 out, int32 alpha = 1, beta = 0).
//
// Layout. We want C[i][j] = sum_p A[i][p] * B[j][p] with A (m x kp), B (np x kp) and C (m x np)
// all row-major (np, kp multiples of 4, zero padded). cuBLASLt is column-major, and a row-major
// R x c matrix with row pitch c is, byte for byte, the column-major c x R matrix (ld = c), i.e.
// its transpose. So in cuBLAS terms:
//   memory of B = column-major Bc (kp x np, ld kp), Bc[p][j] = B[j][p]
//   memory of A = column-major Ac (kp x m,  ld kp), Ac[p][i] = A[i][p]
//   memory of C = column-major Cc (np x m,  ld np), Cc[j][i] = C[i][j]
// and Cc = Bc^T * Ac: Cc[j][i] = sum_p Bc[p][j] * Ac[p][i] = sum_p B[j][p] * A[i][p]. Hence one
// cublasLtMatmul with cuBLAS operand "A" = our weights B (layout kp x np, ld kp, op T), cuBLAS
// operand "B" = our activations A (layout kp x m, ld kp, op N), output layout np x m (ld np);
// cuBLAS M = np, N = m, K = kp. That is the "TN" form, the one cuBLASLt's int8 (IMMA) kernels
// require, together with 4-byte-aligned pointers (cudaMalloc gives 256), leading dimensions that
// are multiples of 4 (kp, np) and M, K multiples of 4 (np, kp): hence the padding of n as well
// as k at pack time. N (our m, the batch rows) is free.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace haca::kernels::gpu {

// c (m x np row-major, int32, device) = a (m x kp) * b (np x kp)^T, device pointers, on the
// calling thread's cuBLASLt handle. np % 4 == 0 and kp % 4 == 0 (throws otherwise).
void launch_cublaslt_gemm_s8s8s32(const std::int8_t* a, const std::int8_t* b, std::int32_t* c, int m, int np, int kp,
                                  cudaStream_t stream);

} // namespace haca::kernels::gpu
