// The `cublaslt` backend: GEMMs through cuBLASLt (gemm_cublaslt.cu), then the same device
// epilogue kernel as the `cuda` backend (bias + requantize + ReLU, dense.cu); conv2d is device
// im2col (conv2d.cu) + the cuBLASLt GEMM + that epilogue; maxpool is the `cuda` kernel.
// Host memory in and out, as in backend_cuda.cu; weights are packed once with n and k padded
// to multiples of 4 (what cuBLASLt's int8 kernels need, see gemm_cublaslt.cuh).
#include "kernels/cuda/backend_cuda.hpp"

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/conv2d.cuh"
#include "kernels/cuda/dense.cuh"
#include "kernels/cuda/gemm_cublaslt.cuh"
#include "kernels/cuda/maxpool.cuh"

namespace haca::kernels {

namespace {

constexpr const char* backend_name = "cublaslt";

std::string cublaslt_unavailable_reason() {
  static const std::string reason = []() -> std::string {
    const std::string& device = gpu::device_unavailable_reason();
    if (!device.empty()) return device;
    cublasLtHandle_t h = nullptr;
    const cublasStatus_t st = cublasLtCreate(&h);
    if (st != CUBLAS_STATUS_SUCCESS) return "cuBLASLt cannot start: " + gpu::cublas_error_text(st);
    (void)cublasLtDestroy(h);
    return std::string{};
  }();
  return reason;
}

void require_cublaslt() {
  const std::string reason = cublaslt_unavailable_reason();
  if (!reason.empty()) throw std::runtime_error("unavailable: " + reason);
}

void cublaslt_gemm(const std::int8_t* a, const std::int8_t* b, std::int32_t* c, int m, int n, int k) {
  gpu::guarded(backend_name, "gemm_s8s8s32", [&] {
    require_cublaslt();
    if (m < 0 || n < 0 || k < 0) throw std::invalid_argument("negative shape");
    if (m == 0 || n == 0) return;
    const int kp = gpu::round_up4(k);
    const int np = gpu::round_up4(n);
    cudaStream_t stream = gpu::thread_stream();
    auto da = gpu::upload_padded(a, m, k, m, kp, stream);
    auto db = gpu::upload_padded(b, n, k, np, kp, stream);
    gpu::device_buffer<std::int32_t> dc(static_cast<std::size_t>(m) * np, stream);
    gpu::launch_cublaslt_gemm_s8s8s32(da.get(), db.get(), dc.get(), m, np, kp, stream);
    // c is m x n; the device result has row pitch np.
    CUDA_CHECK(cudaMemcpy2DAsync(c, static_cast<std::size_t>(n) * sizeof(std::int32_t), dc.get(),
                                 static_cast<std::size_t>(np) * sizeof(std::int32_t),
                                 static_cast<std::size_t>(n) * sizeof(std::int32_t), static_cast<std::size_t>(m),
                                 cudaMemcpyDeviceToHost, stream));
    CUDA_CHECK(cudaStreamSynchronize(stream));
  });
}

packed_weights cublaslt_pack_weights(const std::int8_t* b, int n, int k) {
  return gpu::guarded(backend_name, "pack_weights", [&] {
    require_cublaslt();
    return gpu::pack_device_weights(b, n, k);
  });
}

// acc = a (m x kp, device) * w^T into an m x np int32 scratch, then the epilogue into out.
void gemm_then_epilogue(const std::int8_t* a, const gpu::device_weights& w, const std::int32_t* bias, int m, int hw,
                        requant_params rq, std::int8_t* out, cudaStream_t stream) {
  gpu::device_buffer<std::int32_t> acc(static_cast<std::size_t>(m) * w.np, stream);
  gpu::launch_cublaslt_gemm_s8s8s32(a, w.data, acc.get(), m, w.np, w.kp, stream);
  gpu::launch_bias_requant(acc.get(), w.np, bias, gpu::to_args(rq), out, m, w.n, hw, stream);
}

void cublaslt_dense(const std::int8_t* a, int m, const packed_weights& b, int n, int k, const std::int32_t* bias,
                    requant_params rq, std::int8_t* out) {
  gpu::dense_host(backend_name, &require_cublaslt, &gemm_then_epilogue, a, m, b, n, k, bias, rq, out);
}

void cublaslt_conv2d(const std::int8_t* in, int batch, const packed_weights& wp, const std::int32_t* bias,
                     const conv2d_shape& s, requant_params rq, std::int8_t* out) {
  gpu::conv2d_host(backend_name, &require_cublaslt, &gemm_then_epilogue, in, batch, wp, bias, s, rq, out);
}

void cublaslt_maxpool(const std::int8_t* in, int batch, const maxpool_shape& s, std::int8_t* out) {
  gpu::guarded(backend_name, "maxpool", [&] { require_cublaslt(); });
  gpu::maxpool_host(backend_name, in, batch, s, out);
}

} // namespace

const backend& cublaslt_backend() {
  static const backend be{backend_name,   &cublaslt_unavailable_reason, &cublaslt_gemm,   &cublaslt_pack_weights,
                          &cublaslt_dense, &cublaslt_conv2d,            &cublaslt_maxpool};
  return be;
}

} // namespace haca::kernels
