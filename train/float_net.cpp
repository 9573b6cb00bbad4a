#include "train/float_net.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <thread>

namespace haca::train {

// ---------------------------------------------------------------------------------------------
// Builders

fnet& fnet::dense(int out, bool relu) {
  flayer l;
  l.kind = flayer_kind::dense;
  l.relu = relu;
  l.in = output();
  l.out = fshape{out, 1, 1};
  layers.push_back(std::move(l));
  return *this;
}

fnet& fnet::conv2d(int out_c, int kernel, int pad, bool relu) {
  flayer l;
  l.kind = flayer_kind::conv2d;
  l.relu = relu;
  l.in = output();
  l.kernel = kernel;
  l.pad = pad;
  l.out = fshape{out_c, l.in.h + 2 * pad - kernel + 1, l.in.w + 2 * pad - kernel + 1};
  layers.push_back(std::move(l));
  return *this;
}

fnet& fnet::maxpool(int kernel) {
  flayer l;
  l.kind = flayer_kind::maxpool;
  l.in = output();
  l.kernel = kernel;
  l.stride = kernel;
  l.out = fshape{l.in.c, (l.in.h - kernel) / kernel + 1, (l.in.w - kernel) / kernel + 1};
  layers.push_back(std::move(l));
  return *this;
}

fnet& fnet::flatten() {
  flayer l;
  l.kind = flayer_kind::flatten;
  l.in = output();
  l.out = fshape{l.in.size(), 1, 1};
  layers.push_back(std::move(l));
  return *this;
}

namespace {

struct splitmix64 {
  std::uint64_t s;
  std::uint64_t next() {
    std::uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Uniform in [-1, 1) with 24 bits.
  float uniform_pm1() { return static_cast<float>(static_cast<std::int32_t>(next() >> 40) - (1 << 23)) / float(1 << 23); }
  std::uint64_t below(std::uint64_t n) { return next() % n; } // bias is irrelevant here, determinism is not
};

} // namespace

void fnet::init(std::uint64_t seed) {
  splitmix64 rng{seed ^ 0x6a09e667f3bcc908ull};
  for (auto& l : layers) {
    if (l.kind != flayer_kind::dense && l.kind != flayer_kind::conv2d)
      continue;
    const int fan_in = l.kind == flayer_kind::dense ? l.in.size() : l.in.c * l.kernel * l.kernel;
    const int outs = l.out.c;
    l.w.assign(static_cast<std::size_t>(outs) * fan_in, 0.f);
    l.b.assign(outs, 0.f);
    const float a = std::sqrt(6.0f / static_cast<float>(fan_in));
    for (auto& v : l.w)
      v = a * rng.uniform_pm1();
  }
}

std::size_t fnet::parameter_count() const {
  std::size_t n = 0;
  for (const auto& l : layers)
    n += l.w.size() + l.b.size();
  return n;
}

result<fnet> make_architecture(std::string_view arch) {
  fnet n;
  if (arch == "mlp") {
    n.input = fshape{784, 1, 1};
    n.dense(256, true).dense(10, false);
  } else if (arch == "cnn") {
    n.input = fshape{1, 28, 28};
    n.conv2d(16, 3, 1, true).maxpool(2).conv2d(32, 3, 1, true).maxpool(2).flatten().dense(128, true).dense(10, false);
  } else {
    return make_error(errc::bad_input, "unknown architecture '" + std::string(arch) + "' (expected mlp or cnn)");
  }
  return n;
}

std::vector<std::int8_t> quantize_pixels_u8(const std::vector<std::uint8_t>& pixels) {
  std::vector<std::int8_t> q(pixels.size());
  for (std::size_t i = 0; i < pixels.size(); ++i)
    q[i] = static_cast<std::int8_t>((static_cast<int>(pixels[i]) * 127 + 127) / 255);
  return q;
}

double accuracy(const std::vector<std::uint8_t>& predicted, const std::vector<std::uint8_t>& labels) {
  if (predicted.empty() || predicted.size() != labels.size())
    return 0.0;
  std::size_t hits = 0;
  for (std::size_t i = 0; i < labels.size(); ++i)
    hits += predicted[i] == labels[i];
  return static_cast<double>(hits) / static_cast<double>(labels.size());
}

// ---------------------------------------------------------------------------------------------
// Kernels. C += A * B with A: M x K (lda), B: K x N (ldb), C: M x N (ldc), all row-major.
// Every C element is summed in k order, whatever path computes it, and without FMA (the AVX2
// clone does not enable FMA), so all clones give the same bits.

namespace {

// 8 floats; GCC lowers it to two SSE registers where AVX is not enabled.
typedef float v8f __attribute__((vector_size(32)));

// C[MR][8*NV] += A[MR][K] * B[K][8*NV], accumulators in registers.
template <int MR, int NV>
__attribute__((always_inline)) inline void micro_kernel(int K, const float* A, int lda, const float* B, int ldb,
                                                        float* C, int ldc) {
  v8f acc[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v)
      __builtin_memcpy(&acc[r][v], C + r * ldc + 8 * v, sizeof(v8f));
  for (int k = 0; k < K; ++k) {
    const float* b = B + static_cast<std::ptrdiff_t>(k) * ldb;
    v8f bv[NV];
    for (int v = 0; v < NV; ++v)
      __builtin_memcpy(&bv[v], b + 8 * v, sizeof(v8f));
    for (int r = 0; r < MR; ++r) {
      const float a = A[r * lda + k];
      for (int v = 0; v < NV; ++v)
        acc[r][v] += a * bv[v];
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v)
      __builtin_memcpy(C + r * ldc + 8 * v, &acc[r][v], sizeof(v8f));
}

// Columns j0..N-1 (fewer than 8) of rows i0..i0+M-1, summed in k order like the kernels above.
__attribute__((always_inline)) inline void edge_kernel(int M, int j0, int N, int K, const float* A, int lda,
                                                       const float* B, int ldb, float* C, int ldc) {
  for (int r = 0; r < M; ++r)
    for (int j = j0; j < N; ++j) {
      float acc = C[r * ldc + j];
      for (int k = 0; k < K; ++k)
        acc += A[r * lda + k] * B[static_cast<std::ptrdiff_t>(k) * ldb + j];
      C[r * ldc + j] = acc;
    }
}

__attribute__((target_clones("avx2", "default"))) void gemm_acc(int M, int N, int K, const float* A, int lda,
                                                                const float* B, int ldb, float* C, int ldc) {
  int i = 0;
  for (; i + 4 <= M; i += 4) {
    const float* a = A + static_cast<std::ptrdiff_t>(i) * lda;
    float* c = C + static_cast<std::ptrdiff_t>(i) * ldc;
    int j = 0;
    for (; j + 16 <= N; j += 16)
      micro_kernel<4, 2>(K, a, lda, B + j, ldb, c + j, ldc);
    for (; j + 8 <= N; j += 8)
      micro_kernel<4, 1>(K, a, lda, B + j, ldb, c + j, ldc);
    if (j < N)
      edge_kernel(4, j, N, K, a, lda, B, ldb, c, ldc);
  }
  for (; i < M; ++i) {
    const float* a = A + static_cast<std::ptrdiff_t>(i) * lda;
    float* c = C + static_cast<std::ptrdiff_t>(i) * ldc;
    int j = 0;
    for (; j + 16 <= N; j += 16)
      micro_kernel<1, 2>(K, a, lda, B + j, ldb, c + j, ldc);
    for (; j + 8 <= N; j += 8)
      micro_kernel<1, 1>(K, a, lda, B + j, ldb, c + j, ldc);
    if (j < N)
      edge_kernel(1, j, N, K, a, lda, B, ldb, c, ldc);
  }
}

void transpose(const float* src, int rows, int cols, float* dst) { // dst: cols x rows
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c)
      dst[static_cast<std::ptrdiff_t>(c) * rows + r] = src[static_cast<std::ptrdiff_t>(r) * cols + c];
}

// col[(ic*k + kh)*k + kw][oh*ow_n + ow] = in[ic][oh + kh - pad][ow + kw - pad] (0 outside)
void im2col(const float* in, const flayer& l, float* col) {
  const int k = l.kernel, oh_n = l.out.h, ow_n = l.out.w, P = oh_n * ow_n;
  for (int ic = 0; ic < l.in.c; ++ic)
    for (int kh = 0; kh < k; ++kh)
      for (int kw = 0; kw < k; ++kw) {
        float* dst = col + static_cast<std::ptrdiff_t>((ic * k + kh) * k + kw) * P;
        for (int oh = 0; oh < oh_n; ++oh) {
          const int ih = oh + kh - l.pad;
          float* row = dst + oh * ow_n;
          if (ih < 0 || ih >= l.in.h) {
            std::fill(row, row + ow_n, 0.f);
            continue;
          }
          const float* src = in + (static_cast<std::ptrdiff_t>(ic) * l.in.h + ih) * l.in.w;
          for (int ow = 0; ow < ow_n; ++ow) {
            const int iw = ow + kw - l.pad;
            row[ow] = (iw >= 0 && iw < l.in.w) ? src[iw] : 0.f;
          }
        }
      }
}

// The adjoint of im2col: din[ic][ih][iw] += dcol[...] (din must be zeroed by the caller).
void col2im(const float* dcol, const flayer& l, float* din) {
  const int k = l.kernel, oh_n = l.out.h, ow_n = l.out.w, P = oh_n * ow_n;
  for (int ic = 0; ic < l.in.c; ++ic)
    for (int kh = 0; kh < k; ++kh)
      for (int kw = 0; kw < k; ++kw) {
        const float* src = dcol + static_cast<std::ptrdiff_t>((ic * k + kh) * k + kw) * P;
        for (int oh = 0; oh < oh_n; ++oh) {
          const int ih = oh + kh - l.pad;
          if (ih < 0 || ih >= l.in.h)
            continue;
          float* dst = din + (static_cast<std::ptrdiff_t>(ic) * l.in.h + ih) * l.in.w;
          const float* row = src + oh * ow_n;
          for (int ow = 0; ow < ow_n; ++ow) {
            const int iw = ow + kw - l.pad;
            if (iw >= 0 && iw < l.in.w)
              dst[iw] += row[ow];
          }
        }
      }
}

// Per-step read-only transposes of the weights, shared by both shards.
struct weight_views {
  std::vector<std::vector<float>> wt; // dense: [in][out]; conv2d: [in_c*k*k][out_c]
};

void make_views(const fnet& net, weight_views& v) {
  v.wt.resize(net.layers.size());
  for (std::size_t i = 0; i < net.layers.size(); ++i) {
    const auto& l = net.layers[i];
    if (l.kind == flayer_kind::dense) {
      v.wt[i].resize(l.w.size());
      transpose(l.w.data(), l.out.c, l.in.size(), v.wt[i].data());
    } else if (l.kind == flayer_kind::conv2d) {
      const int K = l.in.c * l.kernel * l.kernel;
      v.wt[i].resize(l.w.size());
      transpose(l.w.data(), l.out.c, K, v.wt[i].data());
    }
  }
}

// One shard's buffers: activations, their gradients, parameter gradients.
struct shard {
  int rows = 0;
  std::vector<std::vector<float>> act;  // act[0] input, act[i+1] output of layer i; rows x size
  std::vector<std::vector<float>> dact; // same shapes
  std::vector<std::vector<std::int32_t>> pool_idx;
  std::vector<std::vector<float>> gw, gb; // dense gw in [in][out] layout
  std::vector<float> col, colt, dcol;
  double loss = 0;
  int correct = 0;

  void resize(const fnet& net, int r, bool with_grads) {
    rows = r;
    const std::size_t L = net.layers.size();
    act.resize(L + 1);
    act[0].resize(static_cast<std::size_t>(r) * net.input.size());
    pool_idx.resize(L);
    std::size_t col_max = 0;
    for (std::size_t i = 0; i < L; ++i) {
      const auto& l = net.layers[i];
      act[i + 1].resize(static_cast<std::size_t>(r) * l.out.size());
      if (l.kind == flayer_kind::maxpool)
        pool_idx[i].resize(act[i + 1].size());
      if (l.kind == flayer_kind::conv2d)
        col_max = std::max(col_max, static_cast<std::size_t>(l.in.c) * l.kernel * l.kernel * l.out.h * l.out.w);
      if (l.kind == flayer_kind::dense)
        col_max = std::max(col_max, static_cast<std::size_t>(r) * l.in.size());
    }
    col.resize(col_max);
    colt.resize(col_max);
    dcol.resize(col_max);
    if (with_grads) {
      dact.resize(L + 1);
      for (std::size_t i = 0; i <= L; ++i)
        dact[i].resize(act[i].size());
      gw.resize(L);
      gb.resize(L);
      for (std::size_t i = 0; i < L; ++i) {
        gw[i].assign(net.layers[i].w.size(), 0.f);
        gb[i].assign(net.layers[i].b.size(), 0.f);
      }
    }
  }
};

// flip (optional, per sample index): mirror rows of width w left-right.
void load_inputs(const std::int8_t* inputs, const int* index, int rows, int size, float* out,
                 const std::uint8_t* flip = nullptr, int w = 1) {
  for (int r = 0; r < rows; ++r) {
    const int sample = index ? index[r] : r;
    const std::int8_t* src = inputs + static_cast<std::ptrdiff_t>(sample) * size;
    float* dst = out + static_cast<std::ptrdiff_t>(r) * size;
    if (flip && flip[sample]) {
      for (int row = 0; row < size; row += w)
        for (int j = 0; j < w; ++j)
          dst[row + j] = static_cast<float>(src[row + w - 1 - j]) / 127.0f;
    } else {
      for (int j = 0; j < size; ++j)
        dst[j] = static_cast<float>(src[j]) / 127.0f;
    }
  }
}

void forward(const fnet& net, const weight_views& v, shard& s) {
  const int R = s.rows;
  for (std::size_t li = 0; li < net.layers.size(); ++li) {
    const auto& l = net.layers[li];
    const float* in = s.act[li].data();
    float* out = s.act[li + 1].data();
    const int in_size = l.in.size(), out_size = l.out.size();
    switch (l.kind) {
    case flayer_kind::dense:
      for (int r = 0; r < R; ++r)
        std::copy(l.b.begin(), l.b.end(), out + static_cast<std::ptrdiff_t>(r) * out_size);
      gemm_acc(R, out_size, in_size, in, in_size, v.wt[li].data(), out_size, out, out_size);
      break;
    case flayer_kind::conv2d: {
      const int K = l.in.c * l.kernel * l.kernel, P = l.out.h * l.out.w;
      for (int r = 0; r < R; ++r) {
        im2col(in + static_cast<std::ptrdiff_t>(r) * in_size, l, s.col.data());
        float* o = out + static_cast<std::ptrdiff_t>(r) * out_size;
        for (int oc = 0; oc < l.out.c; ++oc)
          std::fill(o + oc * P, o + (oc + 1) * P, l.b[oc]);
        gemm_acc(l.out.c, P, K, l.w.data(), K, s.col.data(), P, o, P);
      }
      break;
    }
    case flayer_kind::maxpool: {
      const int k = l.kernel;
      std::int32_t* idx = s.pool_idx[li].data();
      for (int r = 0; r < R; ++r)
        for (int c = 0; c < l.out.c; ++c)
          for (int oh = 0; oh < l.out.h; ++oh)
            for (int ow = 0; ow < l.out.w; ++ow) {
              const int base = (c * l.in.h) * l.in.w;
              int best = base + (oh * k) * l.in.w + ow * k;
              const float* x = in + static_cast<std::ptrdiff_t>(r) * in_size;
              for (int dh = 0; dh < k; ++dh)
                for (int dw = 0; dw < k; ++dw) {
                  const int at = base + (oh * k + dh) * l.in.w + ow * k + dw;
                  if (x[at] > x[best])
                    best = at;
                }
              const std::ptrdiff_t o = static_cast<std::ptrdiff_t>(r) * out_size + (c * l.out.h + oh) * l.out.w + ow;
              out[o] = x[best];
              idx[o] = best;
            }
      break;
    }
    case flayer_kind::flatten:
      std::copy(in, in + static_cast<std::ptrdiff_t>(R) * in_size, out);
      break;
    }
    if (l.relu) {
      const std::size_t n = static_cast<std::size_t>(R) * out_size;
      for (std::size_t i = 0; i < n; ++i)
        out[i] = out[i] > 0.f ? out[i] : 0.f;
    }
  }
}

// Softmax cross-entropy on the last activations; writes dact.back() = (p - onehot) * scale.
void loss_grad(const fnet& net, shard& s, const std::uint8_t* labels, const int* index, float scale) {
  const int C = net.output().size();
  const float* logits = s.act.back().data();
  float* d = s.dact.back().data();
  s.loss = 0;
  s.correct = 0;
  for (int r = 0; r < s.rows; ++r) {
    const float* z = logits + static_cast<std::ptrdiff_t>(r) * C;
    float* g = d + static_cast<std::ptrdiff_t>(r) * C;
    const int y = labels[index[r]];
    int arg = 0;
    for (int c = 1; c < C; ++c)
      if (z[c] > z[arg])
        arg = c;
    s.correct += arg == y;
    const float zmax = z[arg];
    double sum = 0;
    for (int c = 0; c < C; ++c) {
      g[c] = std::exp(z[c] - zmax);
      sum += g[c];
    }
    const float inv = static_cast<float>(1.0 / sum);
    for (int c = 0; c < C; ++c)
      g[c] *= inv;
    s.loss += -std::log(std::max(static_cast<double>(g[y]), 1e-30));
    g[y] -= 1.0f;
    for (int c = 0; c < C; ++c)
      g[c] *= scale;
  }
}

void backward(const fnet& net, const weight_views& v, shard& s) {
  const int R = s.rows;
  for (std::size_t li = net.layers.size(); li-- > 0;) {
    const auto& l = net.layers[li];
    const int in_size = l.in.size(), out_size = l.out.size();
    float* dout = s.dact[li + 1].data();
    const float* out = s.act[li + 1].data();
    const float* in = s.act[li].data();
    float* din = s.dact[li].data();
    const bool need_din = li > 0;
    if (l.relu) {
      const std::size_t n = static_cast<std::size_t>(R) * out_size;
      for (std::size_t i = 0; i < n; ++i)
        if (!(out[i] > 0.f))
          dout[i] = 0.f;
    }
    switch (l.kind) {
    case flayer_kind::dense: {
      // gw[in][out] += in^T dout; gb += column sums; din = dout * W
      transpose(in, R, in_size, s.col.data()); // col holds in^T here
      gemm_acc(in_size, out_size, R, s.col.data(), R, dout, out_size, s.gw[li].data(), out_size);
      for (int r = 0; r < R; ++r)
        for (int o = 0; o < out_size; ++o)
          s.gb[li][o] += dout[static_cast<std::ptrdiff_t>(r) * out_size + o];
      if (need_din) {
        std::fill(din, din + static_cast<std::ptrdiff_t>(R) * in_size, 0.f);
        gemm_acc(R, in_size, out_size, dout, out_size, l.w.data(), in_size, din, in_size);
      }
      break;
    }
    case flayer_kind::conv2d: {
      const int K = l.in.c * l.kernel * l.kernel, P = l.out.h * l.out.w;
      if (need_din)
        std::fill(din, din + static_cast<std::ptrdiff_t>(R) * in_size, 0.f);
      for (int r = 0; r < R; ++r) {
        const float* d = dout + static_cast<std::ptrdiff_t>(r) * out_size;
        im2col(in + static_cast<std::ptrdiff_t>(r) * in_size, l, s.col.data());
        transpose(s.col.data(), K, P, s.colt.data());
        gemm_acc(l.out.c, K, P, d, P, s.colt.data(), K, s.gw[li].data(), K);
        for (int oc = 0; oc < l.out.c; ++oc) {
          float sum = 0.f;
          for (int p = 0; p < P; ++p)
            sum += d[oc * P + p];
          s.gb[li][oc] += sum;
        }
        if (need_din) {
          std::fill(s.dcol.begin(), s.dcol.begin() + static_cast<std::ptrdiff_t>(K) * P, 0.f);
          gemm_acc(K, P, l.out.c, v.wt[li].data(), l.out.c, d, P, s.dcol.data(), P);
          col2im(s.dcol.data(), l, din + static_cast<std::ptrdiff_t>(r) * in_size);
        }
      }
      break;
    }
    case flayer_kind::maxpool: {
      if (!need_din)
        break;
      std::fill(din, din + static_cast<std::ptrdiff_t>(R) * in_size, 0.f);
      const std::int32_t* idx = s.pool_idx[li].data();
      for (int r = 0; r < R; ++r)
        for (int o = 0; o < out_size; ++o) {
          const std::ptrdiff_t at = static_cast<std::ptrdiff_t>(r) * out_size + o;
          din[static_cast<std::ptrdiff_t>(r) * in_size + idx[at]] += dout[at];
        }
      break;
    }
    case flayer_kind::flatten:
      if (need_din)
        std::copy(dout, dout + static_cast<std::ptrdiff_t>(R) * out_size, din);
      break;
    }
  }
}

constexpr int shards_per_batch = 2; // fixed, whatever the core count: part of the determinism

} // namespace

void train_net(fnet& net, const std::vector<std::int8_t>& inputs, const std::vector<std::uint8_t>& labels,
               const train_config& cfg, const std::function<void(const epoch_stats&)>& on_epoch) {
  const int in_size = net.input.size();
  const int n = static_cast<int>(labels.size());
  if (n <= 0 || inputs.size() != static_cast<std::size_t>(n) * in_size)
    throw std::invalid_argument("train_net: inputs and labels disagree");
  const int B = std::max(cfg.batch, shards_per_batch);
  const std::size_t L = net.layers.size();

  std::vector<std::vector<float>> m1(L), m2(L), mb1(L), mb2(L);
  for (std::size_t i = 0; i < L; ++i) {
    m1[i].assign(net.layers[i].w.size(), 0.f);
    m2[i].assign(net.layers[i].w.size(), 0.f);
    mb1[i].assign(net.layers[i].b.size(), 0.f);
    mb2[i].assign(net.layers[i].b.size(), 0.f);
  }
  shard sh[shards_per_batch];
  const int half = B / shards_per_batch;
  sh[0].resize(net, half, true);
  sh[1].resize(net, B - half, true);

  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  splitmix64 rng{cfg.seed ^ 0xbb67ae8584caa73bull};
  const bool do_flip = cfg.hflip && net.input.w > 1;
  splitmix64 flip_rng{cfg.seed ^ 0x3c6ef372fe94f82bull};
  std::vector<std::uint8_t> flips(do_flip ? n : 0, 0);
  weight_views views;
  const long steps_per_epoch = (n + B - 1) / B;
  const long total_steps = steps_per_epoch * cfg.epochs;
  long step = 0;
  double b1t = 1.0, b2t = 1.0;

  for (int epoch = 1; epoch <= cfg.epochs; ++epoch) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = n - 1; i > 0; --i) // Fisher-Yates
      std::swap(order[i], order[rng.below(static_cast<std::uint64_t>(i) + 1)]);
    if (do_flip)
      for (int i = 0; i < n; ++i)
        flips[i] = static_cast<std::uint8_t>(flip_rng.next() >> 63);
    double loss_sum = 0;
    long correct = 0;
    double lr = cfg.lr;
    for (int start = 0; start < n; start += B) {
      const int rows = std::min(B, n - start);
      const float scale = 1.0f / static_cast<float>(rows);
      lr = cfg.lr * (1.0 - (1.0 - cfg.final_lr_fraction) * static_cast<double>(step) / static_cast<double>(total_steps));
      make_views(net, views);
      const int r0 = rows < shards_per_batch ? rows : rows / 2;
      const int counts[2] = {r0, rows - r0};
      const int* idx[2] = {order.data() + start, order.data() + start + r0};
      auto run_shard = [&](int k) {
        shard& s = sh[k];
        s.rows = counts[k];
        for (auto& g : s.gw)
          std::fill(g.begin(), g.end(), 0.f);
        for (auto& g : s.gb)
          std::fill(g.begin(), g.end(), 0.f);
        s.loss = 0;
        s.correct = 0;
        if (s.rows == 0)
          return;
        load_inputs(inputs.data(), idx[k], s.rows, in_size, s.act[0].data(), do_flip ? flips.data() : nullptr,
                    net.input.w);
        forward(net, views, s);
        loss_grad(net, s, labels.data(), idx[k], scale);
        backward(net, views, s);
      };
      std::thread helper(run_shard, 1);
      run_shard(0);
      helper.join();
      loss_sum += sh[0].loss + sh[1].loss;
      correct += sh[0].correct + sh[1].correct;

      ++step;
      b1t *= cfg.beta1;
      b2t *= cfg.beta2;
      const float b1 = static_cast<float>(cfg.beta1), b2 = static_cast<float>(cfg.beta2);
      const float c1 = static_cast<float>(1.0 / (1.0 - b1t)), c2 = static_cast<float>(1.0 / (1.0 - b2t));
      const float lrf = static_cast<float>(lr), eps = static_cast<float>(cfg.eps);
      auto adam = [&](float& p, float g, float& m, float& v) {
        m = b1 * m + (1.f - b1) * g;
        v = b2 * v + (1.f - b2) * g * g;
        p -= lrf * (m * c1) / (std::sqrt(v * c2) + eps);
      };
      for (std::size_t li = 0; li < L; ++li) {
        auto& l = net.layers[li];
        if (l.w.empty())
          continue;
        if (l.kind == flayer_kind::dense) {
          const int I = l.in.size(), O = l.out.c;
          for (int o = 0; o < O; ++o)
            for (int i = 0; i < I; ++i) {
              const std::size_t t = static_cast<std::size_t>(i) * O + o, w = static_cast<std::size_t>(o) * I + i;
              adam(l.w[w], sh[0].gw[li][t] + sh[1].gw[li][t], m1[li][w], m2[li][w]);
            }
        } else {
          for (std::size_t w = 0; w < l.w.size(); ++w)
            adam(l.w[w], sh[0].gw[li][w] + sh[1].gw[li][w], m1[li][w], m2[li][w]);
        }
        for (std::size_t b = 0; b < l.b.size(); ++b)
          adam(l.b[b], sh[0].gb[li][b] + sh[1].gb[li][b], mb1[li][b], mb2[li][b]);
      }
    }
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (on_epoch)
      on_epoch(epoch_stats{epoch, loss_sum / n, static_cast<double>(correct) / n, secs, lr});
  }
}

void forward_visit(const fnet& net, const std::int8_t* inputs, int n,
                   const std::function<void(int layer, const float* values, int rows)>& visit) {
  constexpr int chunk = 256;
  const int in_size = net.input.size();
  weight_views views;
  make_views(net, views);
  shard sh[shards_per_batch];
  sh[0].resize(net, chunk / 2, false);
  sh[1].resize(net, chunk / 2, false);
  for (int start = 0; start < n; start += chunk) {
    const int rows = std::min(chunk, n - start);
    const int r0 = (rows + 1) / 2;
    const int counts[2] = {r0, rows - r0};
    const int offs[2] = {start, start + r0};
    auto run = [&](int k) {
      sh[k].rows = counts[k];
      if (counts[k] == 0)
        return;
      load_inputs(inputs + static_cast<std::ptrdiff_t>(offs[k]) * in_size, nullptr, counts[k], in_size,
                  sh[k].act[0].data());
      forward(net, views, sh[k]);
    };
    std::thread helper(run, 1);
    run(0);
    helper.join();
    for (int k = 0; k < shards_per_batch; ++k) {
      if (counts[k] == 0)
        continue;
      for (int li = -1; li < static_cast<int>(net.layers.size()); ++li)
        visit(li, sh[k].act[li + 1].data(), counts[k]);
    }
  }
}

std::vector<std::uint8_t> predict(const fnet& net, const std::int8_t* inputs, int n) {
  std::vector<std::uint8_t> out;
  out.reserve(n);
  const int last = static_cast<int>(net.layers.size()) - 1;
  const int C = net.output().size();
  forward_visit(net, inputs, n, [&](int layer, const float* v, int rows) {
    if (layer != last)
      return;
    for (int r = 0; r < rows; ++r) {
      const float* z = v + static_cast<std::ptrdiff_t>(r) * C;
      int arg = 0;
      for (int c = 1; c < C; ++c)
        if (z[c] > z[arg])
          arg = c;
      out.push_back(static_cast<std::uint8_t>(arg));
    }
  });
  return out;
}

} // namespace haca::train
