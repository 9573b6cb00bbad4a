#include "kernels/cuda/common.cuh"

#include <cstring>
#include <vector>

#include "kernels/cuda/maxpool.cuh"

namespace haca::kernels::gpu {

void throw_gpu_error(const char* call, const char* file, int line, const std::string& detail) {
  throw std::runtime_error(std::string(file) + ":" + std::to_string(line) + ": " + call + " failed: " + detail);
}

std::string cuda_error_text(cudaError_t err) {
  return std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err);
}

std::string cublas_error_text(cublasStatus_t st) {
  return std::string(cublasLtGetStatusName(st)) + ": " + cublasLtGetStatusString(st);
}

namespace {

struct thread_resources {
  cudaStream_t stream = nullptr;
  cublasLtHandle_t lt = nullptr;
  void* workspace = nullptr;
  std::size_t workspace_bytes = 0;
  thread_resources() = default;
  thread_resources(const thread_resources&) = delete;
  thread_resources& operator=(const thread_resources&) = delete;
  // Errors are ignored here: at process exit the runtime may already be gone.
  ~thread_resources() {
    if (stream != nullptr) (void)cudaStreamSynchronize(stream);
    if (workspace != nullptr) (void)cudaFree(workspace);
    if (lt != nullptr) (void)cublasLtDestroy(lt);
    if (stream != nullptr) (void)cudaStreamDestroy(stream);
  }
};

thread_resources& resources() {
  thread_local thread_resources r;
  return r;
}

} // namespace

cudaStream_t thread_stream() {
  auto& r = resources();
  if (r.stream == nullptr) CUDA_CHECK(cudaStreamCreateWithFlags(&r.stream, cudaStreamNonBlocking));
  return r.stream;
}

cublasLtHandle_t thread_cublaslt(void** workspace, std::size_t* size) {
  auto& r = resources();
  if (r.lt == nullptr) CUBLAS_CHECK(cublasLtCreate(&r.lt));
  if (r.workspace == nullptr) {
    constexpr std::size_t bytes = std::size_t{32} << 20; // what NVIDIA suggests for Hopper
    CUDA_CHECK(cudaMalloc(&r.workspace, bytes));
    r.workspace_bytes = bytes;
  }
  *workspace = r.workspace;
  *size = r.workspace_bytes;
  return r.lt;
}

packed_weights pack_device_weights(const std::int8_t* b, int n, int k) {
  if (n < 0 || k < 0) throw std::invalid_argument("pack_weights: negative shape");
  const int np = round_up4(n), kp = round_up4(k);
  std::vector<std::int8_t> host(static_cast<std::size_t>(np) * kp, 0);
  for (int j = 0; j < n; ++j)
    if (k > 0) std::memcpy(host.data() + static_cast<std::size_t>(j) * kp, b + static_cast<std::size_t>(j) * k, k);
  auto* rec = new device_weights;
  rec->n = n;
  rec->k = k;
  rec->np = np;
  rec->kp = kp;
  // Owned from here on: the deleter frees the device copy (ignoring errors at teardown).
  std::shared_ptr<device_weights> owned(rec, [](device_weights* w) {
    if (w->data != nullptr) (void)cudaFree(w->data);
    delete w;
  });
  if (!host.empty()) {
    void* p = nullptr;
    CUDA_CHECK(cudaMalloc(&p, host.size()));
    rec->data = static_cast<std::int8_t*>(p);
    CUDA_CHECK(cudaMemcpy(rec->data, host.data(), host.size(), cudaMemcpyHostToDevice));
  }
  return owned; // shared_ptr<const void> whose get() is rec
}

const device_weights& unpack_device_weights(const packed_weights& w, int n, int k) {
  if (!w) throw std::invalid_argument("no packed weights");
  const auto* rec = static_cast<const device_weights*>(w.get());
  if (rec->magic != device_weights::magic_value)
    throw std::invalid_argument("weights were not packed by a CUDA backend's pack_weights");
  if (rec->n != n || rec->k != k)
    throw std::invalid_argument("packed weights are " + std::to_string(rec->n) + " x " + std::to_string(rec->k) +
                                ", the call expects " + std::to_string(n) + " x " + std::to_string(k));
  return *rec;
}

device_buffer<std::int8_t> upload_padded(const std::int8_t* host, int rows, int cols, int rows_p, int cols_p,
                                         cudaStream_t stream) {
  device_buffer<std::int8_t> buf(static_cast<std::size_t>(rows_p) * cols_p, stream);
  if (buf.size() == 0) return buf;
  if (rows != rows_p || cols != cols_p) CUDA_CHECK(cudaMemsetAsync(buf.get(), 0, buf.bytes(), stream));
  if (rows > 0 && cols > 0)
    CUDA_CHECK(cudaMemcpy2DAsync(buf.get(), static_cast<std::size_t>(cols_p), host, static_cast<std::size_t>(cols),
                                 static_cast<std::size_t>(cols), static_cast<std::size_t>(rows),
                                 cudaMemcpyHostToDevice, stream));
  return buf;
}

const std::string& device_unavailable_reason() {
  static const std::string reason = []() -> std::string {
    int count = 0;
    const cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) return "no CUDA device: " + cuda_error_text(err);
    if (count < 1) return "no CUDA device: cudaGetDeviceCount found none";
    // The device must also run this build's code (built for CMAKE_CUDA_ARCHITECTURES, 90 by
    // default): asking for a kernel's attributes loads the module and fails otherwise.
    cudaFuncAttributes attr{};
    const cudaError_t load = maxpool_kernel_attributes(&attr);
    if (load != cudaSuccess) {
      cudaDeviceProp prop{};
      std::string which = "device 0";
      if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess)
        which = std::string(prop.name) + " (compute capability " + std::to_string(prop.major) + "." +
                std::to_string(prop.minor) + ")";
      return "CUDA device " + which + " cannot run this build's kernels (rebuild with CMAKE_CUDA_ARCHITECTURES "
             "including it): " + cuda_error_text(load);
    }
    return std::string{};
  }();
  return reason;
}

void require_device() {
  const std::string& reason = device_unavailable_reason();
  if (!reason.empty()) throw std::runtime_error("unavailable: " + reason);
}

} // namespace haca::kernels::gpu
