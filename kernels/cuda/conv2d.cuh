#pragma once
// conv2d as im2col on the device + the int8 GEMM. The column matrix has one row per output
// pixel, i = (b * out_h + oy) * out_w + ox, and kp columns, p = (ic * kernel_h + ky) * kernel_w
// + kx: the order of the weights [out_c][in_c][kernel_h][kernel_w], so row i times weight row
// oc is the convolution sum. Columns p >= k = in_c * kernel_h * kernel_w are zero padding.
// The GEMM result (row i, column oc) lands at out[b][oc][oy][ox] through requant_store with
// hw = out_h * out_w.
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "kernels/ops.hpp"

namespace haca::kernels::gpu {

struct conv_geometry {
  int in_c, in_h, in_w;
  int kernel_h, kernel_w, stride, pad;
  int out_h, out_w;
  int k;  // in_c * kernel_h * kernel_w
  int kp; // k rounded up to a multiple of 4
};
// Validates the shape (positive sizes, out_h/out_w >= 1) and fills the geometry.
conv_geometry make_conv_geometry(const conv2d_shape& s);

// Element idx of the column matrix ([rows][kp], idx = row * kp + p) for images `in` (NCHW).
__host__ __device__ inline std::int8_t im2col_value(const std::int8_t* in, const conv_geometry& g, std::size_t idx) {
  const std::size_t row = idx / static_cast<std::size_t>(g.kp);
  const int p = static_cast<int>(idx % static_cast<std::size_t>(g.kp));
  if (p >= g.k) return 0;
  const std::size_t hw = static_cast<std::size_t>(g.out_h) * g.out_w;
  const std::size_t b = row / hw;
  const int pix = static_cast<int>(row % hw);
  const int oy = pix / g.out_w;
  const int ox = pix % g.out_w;
  const int window = g.kernel_h * g.kernel_w;
  const int ic = p / window;
  const int rest = p % window;
  const int ky = rest / g.kernel_w;
  const int kx = rest % g.kernel_w;
  const int y = oy * g.stride - g.pad + ky;
  const int x = ox * g.stride - g.pad + kx;
  if (y < 0 || y >= g.in_h || x < 0 || x >= g.in_w) return 0; // zero padding
  return in[((b * g.in_c + ic) * g.in_h + y) * g.in_w + x];
}

// col (batch * out_h * out_w rows x kp, device) from in (batch images NCHW, device).
void launch_im2col(const std::int8_t* in, int batch, const conv_geometry& g, std::int8_t* col, cudaStream_t stream);

} // namespace haca::kernels::gpu
