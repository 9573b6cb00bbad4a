#include "train/quantize.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <thread>

#include "kernels/ops.hpp"

namespace haca::train {

std::vector<double> calibrate_ranges(const fnet& net, const std::int8_t* inputs, int n, double percentile) {
  const int L = static_cast<int>(net.layers.size());
  std::vector<double> maxv(L, 0.0);
  // Pass 1: maxima (positive values for hidden layers, |z| for the last layer).
  forward_visit(net, inputs, n, [&](int li, const float* v, int rows) {
    if (li < 0 || net.layers[li].w.empty())
      return;
    const std::size_t cnt = static_cast<std::size_t>(rows) * net.layers[li].out.size();
    double m = maxv[li];
    const bool last = li == L - 1;
    for (std::size_t i = 0; i < cnt; ++i)
      m = std::max(m, static_cast<double>(last ? std::fabs(v[i]) : v[i]));
    maxv[li] = m;
  });
  if (percentile >= 100.0)
    return maxv;
  // Pass 2: histograms of the positive hidden activations over [0, max].
  constexpr int bins = 8192;
  std::vector<std::vector<std::uint64_t>> hist(L);
  for (int li = 0; li < L; ++li)
    if (!net.layers[li].w.empty() && li != L - 1 && maxv[li] > 0)
      hist[li].assign(bins, 0);
  forward_visit(net, inputs, n, [&](int li, const float* v, int rows) {
    if (li < 0 || hist[li].empty())
      return;
    const std::size_t cnt = static_cast<std::size_t>(rows) * net.layers[li].out.size();
    const double k = bins / maxv[li];
    for (std::size_t i = 0; i < cnt; ++i)
      if (v[i] > 0.f)
        ++hist[li][std::min(bins - 1, static_cast<int>(v[i] * k))];
  });
  std::vector<double> out = maxv;
  for (int li = 0; li < L; ++li) {
    if (hist[li].empty())
      continue;
    std::uint64_t total = 0;
    for (auto c : hist[li])
      total += c;
    const auto want = static_cast<std::uint64_t>(std::ceil(static_cast<double>(total) * percentile / 100.0));
    std::uint64_t seen = 0;
    for (int b = 0; b < bins; ++b) {
      seen += hist[li][b];
      if (seen >= want) {
        out[li] = maxv[li] * (b + 1) / bins; // upper edge of the bin
        break;
      }
    }
  }
  return out;
}

quantized quantize_net(const fnet& net, const std::vector<double>& ranges, const std::string& name,
                       const std::map<std::string, std::string>& metadata) {
  quantized q;
  kernels::model& m = q.model;
  m.name = name;
  m.metadata = metadata;
  if (net.input.h == 1 && net.input.w == 1)
    m.input_shape = {net.input.c};
  else
    m.input_shape = {net.input.c, net.input.h, net.input.w};
  double s_in = 1.0 / 127.0;
  const int L = static_cast<int>(net.layers.size());
  q.output_scales.assign(L, 0.0);
  for (int li = 0; li < L; ++li) {
    const flayer& fl = net.layers[li];
    kernels::layer kl;
    switch (fl.kind) {
    case flayer_kind::maxpool:
      kl.kind = kernels::layer_kind::maxpool;
      kl.pool.kernel = fl.kernel;
      kl.pool.stride = fl.stride;
      break;
    case flayer_kind::flatten:
      kl.kind = kernels::layer_kind::flatten;
      break;
    case flayer_kind::dense:
    case flayer_kind::conv2d: {
      if (fl.kind == flayer_kind::dense) {
        kl.kind = kernels::layer_kind::dense;
        kl.in = fl.in.size();
        kl.out = fl.out.c;
      } else {
        kl.kind = kernels::layer_kind::conv2d;
        kl.conv.in_c = fl.in.c;
        kl.conv.in_h = fl.in.h;
        kl.conv.in_w = fl.in.w;
        kl.conv.out_c = fl.out.c;
        kl.conv.kernel_h = fl.kernel;
        kl.conv.kernel_w = fl.kernel;
        kl.conv.stride = 1;
        kl.conv.pad = fl.pad;
      }
      float wmax = 0.f;
      for (float w : fl.w)
        wmax = std::max(wmax, std::fabs(w));
      const double s_w = wmax > 0.f ? static_cast<double>(wmax) / 127.0 : 1.0;
      kl.weight.resize(fl.w.size());
      for (std::size_t i = 0; i < fl.w.size(); ++i)
        kl.weight[i] = static_cast<std::int8_t>(std::clamp(std::lround(fl.w[i] / s_w), -127l, 127l));
      const double s_acc = s_in * s_w;
      kl.bias.resize(fl.b.size());
      for (std::size_t i = 0; i < fl.b.size(); ++i) {
        const double b = std::nearbyint(fl.b[i] / s_acc);
        kl.bias[i] = static_cast<std::int32_t>(std::clamp(b, -2147483647.0, 2147483647.0));
      }
      double range = li < static_cast<int>(ranges.size()) ? ranges[li] : 0.0;
      if (!(range > 0.0))
        range = 1.0;
      double s_out = range / 127.0;
      double ratio = s_acc / s_out;
      if (!(ratio < 1.0)) {
        q.notes.push_back("layer " + std::to_string(li) + ": requant ratio " + std::to_string(ratio) +
                          " >= 1; output scale raised so that it is 0.999");
        ratio = 0.999;
      }
      kernels::quantize_multiplier(ratio, kl.rq.multiplier, kl.rq.shift);
      kl.rq.relu = fl.relu;
      const double realized = static_cast<double>(kl.rq.multiplier) / 2147483648.0 / std::ldexp(1.0, kl.rq.shift);
      s_in = s_acc / realized;
      break;
    }
    }
    q.output_scales[li] = s_in;
    m.layers.push_back(std::move(kl));
  }
  return q;
}

namespace {

// Integer loops; integer sums are exact in any order, so the compiler may vectorize freely.
__attribute__((target_clones("avx2", "default"))) void int8_dense(const std::int8_t* in, int in_n,
                                                                  const std::int8_t* w, const std::int32_t* bias,
                                                                  int out_n, kernels::requant_params rq,
                                                                  std::int8_t* out) {
  for (int o = 0; o < out_n; ++o) {
    const std::int8_t* wr = w + static_cast<std::ptrdiff_t>(o) * in_n;
    std::int32_t acc = 0;
    for (int i = 0; i < in_n; ++i)
      acc += static_cast<std::int32_t>(in[i]) * static_cast<std::int32_t>(wr[i]);
    std::int8_t v = kernels::requantize(acc + bias[o], rq.multiplier, rq.shift);
    out[o] = rq.relu && v < 0 ? std::int8_t{0} : v;
  }
}

__attribute__((target_clones("avx2", "default"))) void int8_conv(const std::int8_t* in, const flayer& l,
                                                                 const std::int8_t* w, const std::int32_t* bias,
                                                                 kernels::requant_params rq, std::int32_t* acc,
                                                                 std::int8_t* out) {
  const int k = l.kernel, OH = l.out.h, OW = l.out.w, P = OH * OW;
  for (int oc = 0; oc < l.out.c; ++oc) {
    std::int32_t* a = acc;
    std::fill(a, a + P, 0);
    for (int ic = 0; ic < l.in.c; ++ic)
      for (int kh = 0; kh < k; ++kh)
        for (int kw = 0; kw < k; ++kw) {
          const std::int32_t wv = w[((oc * l.in.c + ic) * k + kh) * k + kw];
          for (int oh = 0; oh < OH; ++oh) {
            const int ih = oh + kh - l.pad;
            if (ih < 0 || ih >= l.in.h)
              continue;
            const std::int8_t* src = in + (ic * l.in.h + ih) * l.in.w;
            std::int32_t* dst = a + oh * OW;
            const int ow_lo = std::max(0, l.pad - kw), ow_hi = std::min(OW, l.in.w + l.pad - kw);
            for (int ow = ow_lo; ow < ow_hi; ++ow)
              dst[ow] += wv * static_cast<std::int32_t>(src[ow + kw - l.pad]);
          }
        }
    for (int p = 0; p < P; ++p) {
      std::int8_t v = kernels::requantize(a[p] + bias[oc], rq.multiplier, rq.shift);
      out[oc * P + p] = rq.relu && v < 0 ? std::int8_t{0} : v;
    }
  }
}

// Shapes of the kernels::model layers, recomputed here so the simulator needs nothing but the
// layer parameters.
std::vector<flayer> shapes_of(const kernels::model& m) {
  fshape s;
  if (m.input_shape.size() == 1)
    s = fshape{static_cast<int>(m.input_shape[0]), 1, 1};
  else if (m.input_shape.size() == 3)
    s = fshape{static_cast<int>(m.input_shape[0]), static_cast<int>(m.input_shape[1]),
               static_cast<int>(m.input_shape[2])};
  else
    throw std::invalid_argument("int8_predict: input_shape must have 1 or 3 dimensions");
  std::vector<flayer> out;
  for (const auto& kl : m.layers) {
    flayer l;
    l.in = s;
    switch (kl.kind) {
    case kernels::layer_kind::dense:
      l.kind = flayer_kind::dense;
      l.out = fshape{kl.out, 1, 1};
      if (s.size() != kl.in && kl.in != 0)
        throw std::invalid_argument("int8_predict: dense input size mismatch");
      break;
    case kernels::layer_kind::conv2d:
      l.kind = flayer_kind::conv2d;
      l.kernel = kl.conv.kernel_h;
      l.pad = kl.conv.pad;
      if (kl.conv.stride != 1 || kl.conv.kernel_h != kl.conv.kernel_w)
        throw std::invalid_argument("int8_predict: only square stride-1 convolutions");
      l.out = fshape{kl.conv.out_c, s.h + 2 * l.pad - l.kernel + 1, s.w + 2 * l.pad - l.kernel + 1};
      break;
    case kernels::layer_kind::maxpool:
      l.kind = flayer_kind::maxpool;
      l.kernel = kl.pool.kernel;
      l.stride = kl.pool.stride;
      l.out = fshape{s.c, (s.h - l.kernel) / l.stride + 1, (s.w - l.kernel) / l.stride + 1};
      break;
    case kernels::layer_kind::flatten:
      l.kind = flayer_kind::flatten;
      l.out = fshape{s.size(), 1, 1};
      break;
    }
    s = l.out;
    out.push_back(std::move(l));
  }
  return out;
}

void int8_run_one(const kernels::model& m, const std::vector<flayer>& shapes, const std::int8_t* input,
                  std::vector<std::int8_t>& a, std::vector<std::int8_t>& b, std::vector<std::int32_t>& acc) {
  a.assign(input, input + shapes.front().in.size());
  for (std::size_t li = 0; li < shapes.size(); ++li) {
    const auto& l = shapes[li];
    const auto& kl = m.layers[li];
    b.resize(l.out.size());
    switch (l.kind) {
    case flayer_kind::dense:
      int8_dense(a.data(), l.in.size(), kl.weight.data(), kl.bias.data(), l.out.c, kl.rq, b.data());
      break;
    case flayer_kind::conv2d:
      acc.resize(static_cast<std::size_t>(l.out.h) * l.out.w);
      int8_conv(a.data(), l, kl.weight.data(), kl.bias.data(), kl.rq, acc.data(), b.data());
      break;
    case flayer_kind::maxpool:
      for (int c = 0; c < l.out.c; ++c)
        for (int oh = 0; oh < l.out.h; ++oh)
          for (int ow = 0; ow < l.out.w; ++ow) {
            std::int8_t v = std::numeric_limits<std::int8_t>::min();
            for (int dh = 0; dh < l.kernel; ++dh)
              for (int dw = 0; dw < l.kernel; ++dw)
                v = std::max(v, a[(c * l.in.h + oh * l.stride + dh) * l.in.w + ow * l.stride + dw]);
            b[(c * l.out.h + oh) * l.out.w + ow] = v;
          }
      break;
    case flayer_kind::flatten:
      b = a;
      break;
    }
    std::swap(a, b);
  }
}

} // namespace

std::vector<std::uint8_t> int8_predict(const kernels::model& m, const std::int8_t* inputs, int n) {
  const auto shapes = shapes_of(m);
  if (shapes.empty())
    throw std::invalid_argument("int8_predict: model without layers");
  const int in_size = shapes.front().in.size();
  std::vector<std::uint8_t> out(n);
  auto work = [&](int lo, int hi) {
    std::vector<std::int8_t> a, b;
    std::vector<std::int32_t> acc;
    for (int i = lo; i < hi; ++i) {
      int8_run_one(m, shapes, inputs + static_cast<std::ptrdiff_t>(i) * in_size, a, b, acc);
      int arg = 0;
      for (int c = 1; c < static_cast<int>(a.size()); ++c)
        if (a[c] > a[arg])
          arg = c;
      out[i] = static_cast<std::uint8_t>(arg);
    }
  };
  std::thread helper(work, n / 2, n);
  work(0, n / 2);
  helper.join();
  return out;
}

} // namespace haca::train
