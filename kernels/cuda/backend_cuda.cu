// The `cuda` backend: custom kernels (gemm_s8s8s32.cu, dense.cu, conv2d.cu, maxpool.cu).
//
// Every entry point takes and returns host memory: it copies its inputs to the device on this
// thread's stream, runs, copies the output back and synchronizes. Simple and correct; a
// device-resident pipeline (activations staying on the GPU between layers) would save the
// copies. Packed weights are uploaded once, at pack time. Errors throw std::runtime_error
// naming the backend, the op, the failing CUDA call and its file:line.
#include "kernels/cuda/backend_cuda.hpp"

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/conv2d.cuh"
#include "kernels/cuda/dense.cuh"
#include "kernels/cuda/gemm_s8s8s32.cuh"
#include "kernels/cuda/maxpool.cuh"

namespace haca::kernels {

namespace {

constexpr const char* backend_name = "cuda";

std::string cuda_unavailable_reason() { return gpu::device_unavailable_reason(); }

void cuda_gemm(const std::int8_t* a, const std::int8_t* b, std::int32_t* c, int m, int n, int k) {
  gpu::guarded(backend_name, "gemm_s8s8s32", [&] {
    gpu::require_device();
    if (m < 0 || n < 0 || k < 0) throw std::invalid_argument("negative shape");
    if (m == 0 || n == 0) return;
    const int kp = gpu::round_up4(k);
    cudaStream_t stream = gpu::thread_stream();
    auto da = gpu::upload_padded(a, m, k, m, kp, stream);
    auto db = gpu::upload_padded(b, n, k, n, kp, stream);
    gpu::device_buffer<std::int32_t> dc(static_cast<std::size_t>(m) * n, stream);
    gpu::launch_gemm_s8s8s32(da.get(), db.get(), dc.get(), m, n, kp, stream);
    gpu::download_and_sync(c, dc.get(), dc.size(), stream);
  });
}

packed_weights cuda_pack_weights(const std::int8_t* b, int n, int k) {
  return gpu::guarded(backend_name, "pack_weights", [&] {
    gpu::require_device();
    return gpu::pack_device_weights(b, n, k);
  });
}

// The custom fused kernel: GEMM and bias + requant + ReLU in one launch.
void fused_gemm_epilogue(const std::int8_t* a, const gpu::device_weights& w, const std::int32_t* bias, int m, int hw,
                         requant_params rq, std::int8_t* out, cudaStream_t stream) {
  gpu::launch_dense(a, w.data, bias, gpu::to_args(rq), out, m, w.n, w.kp, hw, stream);
}

void cuda_dense(const std::int8_t* a, int m, const packed_weights& b, int n, int k, const std::int32_t* bias,
                requant_params rq, std::int8_t* out) {
  gpu::dense_host(backend_name, &gpu::require_device, &fused_gemm_epilogue, a, m, b, n, k, bias, rq, out);
}

void cuda_conv2d(const std::int8_t* in, int batch, const packed_weights& wp, const std::int32_t* bias,
                 const conv2d_shape& s, requant_params rq, std::int8_t* out) {
  gpu::conv2d_host(backend_name, &gpu::require_device, &fused_gemm_epilogue, in, batch, wp, bias, s, rq, out);
}

} // namespace

namespace gpu {

void dense_host(const char* backend, void (*require)(), gemm_epilogue_fn step, const std::int8_t* a, int m,
                const packed_weights& b, int n, int k, const std::int32_t* bias, requant_params rq, std::int8_t* out) {
  guarded(backend, "dense", [&] {
    require();
    const device_weights& w = unpack_device_weights(b, n, k);
    if (m < 0) throw std::invalid_argument("negative batch");
    if (m == 0 || n == 0) return;
    cudaStream_t stream = thread_stream();
    auto da = upload_padded(a, m, k, m, w.kp, stream);
    auto dbias = bias != nullptr ? upload(bias, static_cast<std::size_t>(n), stream) : device_buffer<std::int32_t>(0, stream);
    device_buffer<std::int8_t> dout(static_cast<std::size_t>(m) * n, stream);
    step(da.get(), w, dbias.get(), m, 1, rq, dout.get(), stream);
    download_and_sync(out, dout.get(), dout.size(), stream);
  });
}

void conv2d_host(const char* backend, void (*require)(), gemm_epilogue_fn step, const std::int8_t* in, int batch,
                 const packed_weights& wp, const std::int32_t* bias, const conv2d_shape& s, requant_params rq,
                 std::int8_t* out) {
  guarded(backend, "conv2d", [&] {
    require();
    const conv_geometry g = make_conv_geometry(s);
    const device_weights& w = unpack_device_weights(wp, s.out_c, g.k);
    if (batch < 0) throw std::invalid_argument("negative batch");
    if (batch == 0) return;
    const int hw = g.out_h * g.out_w;
    const long long rows = static_cast<long long>(batch) * hw;
    if (rows > 2147483647LL - 64) throw std::invalid_argument("batch * out_h * out_w too large");
    const int m = static_cast<int>(rows);
    cudaStream_t stream = thread_stream();
    auto din = upload(in, static_cast<std::size_t>(batch) * g.in_c * g.in_h * g.in_w, stream);
    device_buffer<std::int8_t> col(static_cast<std::size_t>(m) * g.kp, stream);
    launch_im2col(din.get(), batch, g, col.get(), stream);
    auto dbias = bias != nullptr ? upload(bias, static_cast<std::size_t>(s.out_c), stream)
                                 : device_buffer<std::int32_t>(0, stream);
    device_buffer<std::int8_t> dout(static_cast<std::size_t>(m) * s.out_c, stream);
    step(col.get(), w, dbias.get(), m, hw, rq, dout.get(), stream);
    download_and_sync(out, dout.get(), dout.size(), stream);
  });
}

void maxpool_host(const char* backend, const std::int8_t* in, int batch, const maxpool_shape& s, std::int8_t* out) {
  guarded(backend, "maxpool", [&] {
    require_device();
    const pool_geometry g = make_pool_geometry(s);
    if (batch < 0) throw std::invalid_argument("negative batch");
    if (batch == 0) return;
    const std::size_t planes = static_cast<std::size_t>(batch) * s.channels;
    cudaStream_t stream = thread_stream();
    auto din = upload(in, planes * g.in_h * g.in_w, stream);
    device_buffer<std::int8_t> dout(planes * g.out_h * g.out_w, stream);
    launch_maxpool(din.get(), planes, g, dout.get(), stream);
    download_and_sync(out, dout.get(), dout.size(), stream);
  });
}

} // namespace gpu

namespace {

void cuda_maxpool(const std::int8_t* in, int batch, const maxpool_shape& s, std::int8_t* out) {
  gpu::maxpool_host(backend_name, in, batch, s, out);
}

} // namespace

const backend& cuda_backend() {
  static const backend be{backend_name, &cuda_unavailable_reason, &cuda_gemm, &cuda_pack_weights,
                          &cuda_dense,  &cuda_conv2d,             &cuda_maxpool};
  return be;
}

} // namespace haca::kernels
