#include "kernels/cuda/maxpool.cuh"

#include <stdexcept>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/dense.cuh"

namespace haca::kernels::gpu {

namespace {

constexpr int maxpool_threads = 256;

__global__ void maxpool_kernel(const std::int8_t* __restrict__ in, pool_geometry g, std::size_t total,
                               std::int8_t* __restrict__ out) {
  for (std::size_t idx = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += static_cast<std::size_t>(gridDim.x) * blockDim.x)
    out[idx] = maxpool_value(in, g, idx);
}

} // namespace

pool_geometry make_pool_geometry(const maxpool_shape& s) {
  if (s.channels <= 0 || s.in_h <= 0 || s.in_w <= 0 || s.kernel <= 0 || s.stride <= 0 || s.kernel > s.in_h ||
      s.kernel > s.in_w)
    throw std::invalid_argument("maxpool: bad shape (positive sizes, kernel no larger than the input)");
  return pool_geometry{s.in_h, s.in_w, s.kernel, s.stride, s.out_h(), s.out_w()};
}

void launch_maxpool(const std::int8_t* in, std::size_t planes, const pool_geometry& g, std::int8_t* out,
                    cudaStream_t stream) {
  const std::size_t total = planes * static_cast<std::size_t>(g.out_h) * g.out_w;
  if (total == 0) return;
  maxpool_kernel<<<grid_stride_blocks(total, maxpool_threads), maxpool_threads, 0, stream>>>(in, g, total, out);
  CUDA_CHECK_LAUNCH();
}

cudaError_t maxpool_kernel_attributes(cudaFuncAttributes* attr) {
  return cudaFuncGetAttributes(attr, maxpool_kernel);
}

} // namespace haca::kernels::gpu
