#pragma once
// CUDA backends (built when HACA_CUDA finds nvcc): `cuda` runs custom kernels (tiled int8 GEMM
// with the fused requant epilogue, conv, pool); `cublaslt` runs the GEMMs through cuBLASLt
// (CUBLAS_COMPUTE_32I) with the same epilogue. Both report a reason when no device is present.
#include "kernels/ops.hpp"

namespace haca::kernels {

const backend& cuda_backend();
const backend& cublaslt_backend();

} // namespace haca::kernels
