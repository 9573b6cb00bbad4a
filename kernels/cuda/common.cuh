#pragma once
// Shared pieces of the CUDA backends: error checks that throw, the device copy of the integer
// requantization (bit-identical to kernels/ops.cpp), device buffers, per-thread stream and
// cuBLASLt handle, and the packed-weight record both backends use.
//
// The .cu files here keep to C++17 so they build whether CMake hands nvcc -std=c++17 or c++20.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>

#include "kernels/ops.hpp"
#include "kernels/requant.hpp"

namespace haca::kernels::gpu {

// Throws std::runtime_error("<file>:<line>: <call> failed: <detail>"). Never aborts: the backend
// entry points add the backend and op name and let the caller (the provider) report it.
[[noreturn]] void throw_gpu_error(const char* call, const char* file, int line, const std::string& detail);
std::string cuda_error_text(cudaError_t err);     // "cudaErrorX: description"
std::string cublas_error_text(cublasStatus_t st); // "CUBLAS_STATUS_X: description"

#define CUDA_CHECK(call)                                                                          \
  do {                                                                                            \
    const cudaError_t haca_cuda_err_ = (call);                                                    \
    if (haca_cuda_err_ != cudaSuccess)                                                            \
      ::haca::kernels::gpu::throw_gpu_error(#call, __FILE__, __LINE__,                            \
                                            ::haca::kernels::gpu::cuda_error_text(haca_cuda_err_)); \
  } while (0)

#define CUBLAS_CHECK(call)                                                                           \
  do {                                                                                               \
    const cublasStatus_t haca_cublas_st_ = (call);                                                   \
    if (haca_cublas_st_ != CUBLAS_STATUS_SUCCESS)                                                    \
      ::haca::kernels::gpu::throw_gpu_error(#call, __FILE__, __LINE__,                               \
                                            ::haca::kernels::gpu::cublas_error_text(haca_cublas_st_)); \
  } while (0)

// After a <<<...>>> launch: catches bad launch configurations at once (faults inside the kernel
// surface at the next synchronizing call, which is CUDA_CHECKed too).
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

// ---- Requantization: the shared host/device definition (kernels/requant.hpp) -----------------
// The host emulation check (self_test.cu) runs these very functions against the reference.
using kernels::bias_requant_relu;
using kernels::requantize;
using kernels::rounding_divide_by_pot;
using kernels::saturating_rounding_doubling_high_mul;

// Plain copy of requant_params for kernel arguments (ops.hpp's struct has initializers; this one
// is a guaranteed trivial aggregate).
struct requant_args {
  std::int32_t multiplier;
  int shift;
  bool relu;
};
inline requant_args to_args(const requant_params& rq) { return requant_args{rq.multiplier, rq.shift, rq.relu}; }

// Writes one output of a dense or conv layer. Row i of the GEMM is (image b, pixel p) with
// i = b * hw + p; column j is the output feature / channel. The output is [b][n][hw] (NCHW for
// conv); with hw == 1 that is plain row-major [m][n] for dense.
struct requant_store {
  std::int8_t* out;
  const std::int32_t* bias; // may be null: no bias
  requant_args rq;
  int n;
  int hw;
  __host__ __device__ void operator()(int i, int j, std::int32_t acc) const {
    const int b = i / hw;
    const int p = i - b * hw;
    const std::int32_t bj = bias != nullptr ? bias[j] : 0;
    out[(static_cast<std::size_t>(b) * n + j) * hw + p] = bias_requant_relu(acc, bj, rq.multiplier, rq.shift, rq.relu);
  }
};

constexpr int round_up4(int x) { return (x + 3) / 4 * 4; }

// ---- Device memory and per-thread resources -----------------------------------------------

// A stream-ordered device allocation (cudaMallocAsync / cudaFreeAsync on the call's stream).
template <class T>
class device_buffer {
 public:
  device_buffer(std::size_t count, cudaStream_t stream) : count_(count), stream_(stream) {
    if (count_ > 0) {
      void* p = nullptr;
      CUDA_CHECK(cudaMallocAsync(&p, count_ * sizeof(T), stream_));
      ptr_ = static_cast<T*>(p);
    }
  }
  device_buffer(const device_buffer&) = delete;
  device_buffer& operator=(const device_buffer&) = delete;
  device_buffer(device_buffer&& other) noexcept : ptr_(other.ptr_), count_(other.count_), stream_(other.stream_) {
    other.ptr_ = nullptr;
    other.count_ = 0;
  }
  device_buffer& operator=(device_buffer&&) = delete;
  ~device_buffer() {
    if (ptr_ != nullptr) (void)cudaFreeAsync(ptr_, stream_); // errors already reported by the op
  }
  T* get() const { return ptr_; }
  std::size_t size() const { return count_; }
  std::size_t bytes() const { return count_ * sizeof(T); }

 private:
  T* ptr_ = nullptr;
  std::size_t count_;
  cudaStream_t stream_;
};

// This thread's non-blocking stream (created on first use, destroyed at thread exit), so
// concurrent provider threads do not serialize on the legacy default stream.
cudaStream_t thread_stream();
// This thread's cuBLASLt handle and its workspace (bytes in *size).
cublasLtHandle_t thread_cublaslt(void** workspace, std::size_t* size);

// Packed weights (both backends): b (n x k row-major) zero-padded to np x kp, np and kp the
// next multiples of 4, in device memory. Freed with cudaFree when the last shared_ptr goes.
struct device_weights {
  static constexpr std::uint64_t magic_value = 0x68616361'63756461ull; // "hacacuda"
  std::uint64_t magic = magic_value;
  int n = 0, k = 0, np = 0, kp = 0;
  std::int8_t* data = nullptr;
};
packed_weights pack_device_weights(const std::int8_t* b, int n, int k);
// The record behind `w`, checked against the expected n and k (throws on a mismatch or on
// weights packed by another backend).
const device_weights& unpack_device_weights(const packed_weights& w, int n, int k);

// Copies host rows x cols (row-major) into a zeroed device rows_p x cols_p buffer (row-major,
// pitch cols_p) on `stream`.
device_buffer<std::int8_t> upload_padded(const std::int8_t* host, int rows, int cols, int rows_p, int cols_p,
                                         cudaStream_t stream);
template <class T>
device_buffer<T> upload(const T* host, std::size_t count, cudaStream_t stream) {
  device_buffer<T> buf(count, stream);
  if (count > 0) CUDA_CHECK(cudaMemcpyAsync(buf.get(), host, count * sizeof(T), cudaMemcpyHostToDevice, stream));
  return buf;
}
// Copies a device buffer back and waits for the stream.
template <class T>
void download_and_sync(T* host, const T* dev, std::size_t count, cudaStream_t stream) {
  if (count > 0) CUDA_CHECK(cudaMemcpyAsync(host, dev, count * sizeof(T), cudaMemcpyDeviceToHost, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
}

// "" when a CUDA device is present and runs this build's kernels; else the reason. Cached.
const std::string& device_unavailable_reason();
// Throws "unavailable: <reason>" when there is no usable device (guarded() adds the backend and op).
void require_device();

// Runs f(), prefixing any exception's message with "<backend> <op>: ".
template <class F>
auto guarded(const char* backend_name, const char* op, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string(backend_name) + " backend, " + op + ": " + e.what());
  }
}

} // namespace haca::kernels::gpu
