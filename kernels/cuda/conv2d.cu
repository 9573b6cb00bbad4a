#include "kernels/cuda/conv2d.cuh"

#include <stdexcept>
#include <string>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/dense.cuh"

namespace haca::kernels::gpu {

namespace {

constexpr int im2col_threads = 256;

__global__ void im2col_kernel(const std::int8_t* __restrict__ in, conv_geometry g, std::size_t total,
                              std::int8_t* __restrict__ col) {
  for (std::size_t idx = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += static_cast<std::size_t>(gridDim.x) * blockDim.x)
    col[idx] = im2col_value(in, g, idx);
}

} // namespace

conv_geometry make_conv_geometry(const conv2d_shape& s) {
  if (s.in_c <= 0 || s.in_h <= 0 || s.in_w <= 0 || s.out_c <= 0 || s.kernel_h <= 0 || s.kernel_w <= 0 ||
      s.stride <= 0 || s.pad < 0)
    throw std::invalid_argument("conv2d: bad shape (sizes and stride must be positive, pad >= 0)");
  conv_geometry g{};
  g.in_c = s.in_c;
  g.in_h = s.in_h;
  g.in_w = s.in_w;
  g.kernel_h = s.kernel_h;
  g.kernel_w = s.kernel_w;
  g.stride = s.stride;
  g.pad = s.pad;
  g.out_h = s.out_h();
  g.out_w = s.out_w();
  if (s.in_h + 2 * s.pad < s.kernel_h || s.in_w + 2 * s.pad < s.kernel_w || g.out_h < 1 || g.out_w < 1)
    throw std::invalid_argument("conv2d: kernel larger than the padded input");
  g.k = s.in_c * s.kernel_h * s.kernel_w;
  g.kp = round_up4(g.k);
  return g;
}

void launch_im2col(const std::int8_t* in, int batch, const conv_geometry& g, std::int8_t* col, cudaStream_t stream) {
  const std::size_t total =
      static_cast<std::size_t>(batch) * static_cast<std::size_t>(g.out_h) * g.out_w * static_cast<std::size_t>(g.kp);
  if (total == 0) return;
  im2col_kernel<<<grid_stride_blocks(total, im2col_threads), im2col_threads, 0, stream>>>(in, g, total, col);
  CUDA_CHECK_LAUNCH();
}

} // namespace haca::kernels::gpu
