#include "kernels/cuda/self_test.hpp"

#include <array>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/backend_cuda.hpp"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/conv2d.cuh"
#include "kernels/cuda/gemm_s8s8s32.cuh"
#include "kernels/cuda/maxpool.cuh"

namespace haca::kernels {

namespace {

struct gemm_case {
  int m, n, k;
};
// Partial tiles, k and n not multiples of 4, more than one k step, k = 0.
constexpr std::array<gemm_case, 7> gemm_cases{{
    {1, 1, 1}, {5, 7, 13}, {67, 70, 129}, {130, 65, 36}, {64, 64, 32}, {3, 10, 0}, {17, 3, 784},
}};

constexpr std::array<conv2d_shape, 4> conv_cases{{
    {3, 9, 10, 5, 3, 3, 2, 1},
    {1, 28, 28, 8, 5, 5, 1, 2},
    {4, 6, 7, 6, 1, 1, 1, 0},
    {2, 5, 5, 3, 2, 3, 1, 0},
}};

constexpr std::array<maxpool_shape, 4> pool_cases{{
    {3, 7, 9, 2, 2},
    {2, 6, 6, 3, 1},
    {1, 5, 5, 5, 5},
    {4, 28, 28, 2, 2},
}};

struct random_source {
  std::mt19937 gen{20261125u};
  std::vector<std::int8_t> bytes(std::size_t n) {
    std::uniform_int_distribution<int> d(-128, 127);
    std::vector<std::int8_t> v(n);
    for (auto& x : v) x = static_cast<std::int8_t>(d(gen));
    return v;
  }
  std::vector<std::int32_t> bias(std::size_t n) {
    std::uniform_int_distribution<std::int32_t> d(-(1 << 18), 1 << 18);
    std::vector<std::int32_t> v(n);
    for (auto& x : v) x = d(gen);
    if (n > 0) v[0] = 2147483647; // wraps when added, as in the reference
    return v;
  }
  requant_params rq(bool relu) {
    std::uniform_int_distribution<std::int32_t> mult(std::int32_t{1} << 30, 2147483647);
    std::uniform_int_distribution<int> shift(6, 14);
    requant_params p;
    p.multiplier = mult(gen);
    p.shift = shift(gen);
    p.relu = relu;
    return p;
  }
};

template <class T>
std::string compare(const std::string& what, const std::vector<T>& got, const std::vector<T>& want) {
  for (std::size_t i = 0; i < want.size(); ++i)
    if (got[i] != want[i])
      return what + ": element " + std::to_string(i) + " is " + std::to_string(static_cast<long long>(got[i])) +
             ", reference " + std::to_string(static_cast<long long>(want[i]));
  return {};
}

std::string gemm_name(const char* be, const char* op, const gemm_case& c) {
  return std::string(be) + " " + op + " m=" + std::to_string(c.m) + " n=" + std::to_string(c.n) +
         " k=" + std::to_string(c.k);
}
std::string conv_name(const char* be, const conv2d_shape& s) {
  return std::string(be) + " conv2d in=" + std::to_string(s.in_c) + "x" + std::to_string(s.in_h) + "x" +
         std::to_string(s.in_w) + " out_c=" + std::to_string(s.out_c) + " kernel=" + std::to_string(s.kernel_h) +
         "x" + std::to_string(s.kernel_w) + " stride=" + std::to_string(s.stride) + " pad=" + std::to_string(s.pad);
}
std::string pool_name(const char* be, const maxpool_shape& s) {
  return std::string(be) + " maxpool " + std::to_string(s.channels) + "x" + std::to_string(s.in_h) + "x" +
         std::to_string(s.in_w) + " kernel=" + std::to_string(s.kernel) + " stride=" + std::to_string(s.stride);
}

// ---- requantization edge values -----------------------------------------------------------

struct requant_probe {
  std::vector<std::int32_t> acc, mult;
  std::vector<int> shift;
};

requant_probe make_requant_probe() {
  const std::int32_t accs[] = {kernels::int32_min_value, kernels::int32_min_value + 1, -(1 << 30), -65536, -257, -256, -255,
                               -129, -128, -3, -2, -1, 0, 1, 2, 3, 127, 128, 255, 256, 257, 65535, 1 << 30,
                               kernels::int32_max_value - 1, kernels::int32_max_value};
  const std::int32_t mults[] = {std::int32_t{1} << 30, (std::int32_t{1} << 30) + 1, 1518500250, 2147483646,
                                kernels::int32_max_value, kernels::int32_min_value};
  const int shifts[] = {-1, 0, 1, 2, 7, 8, 15, 30, 31, 32, 40};
  requant_probe p;
  for (auto a : accs)
    for (auto mu : mults)
      for (auto s : shifts) {
        p.acc.push_back(a);
        p.mult.push_back(mu);
        p.shift.push_back(s);
      }
  std::mt19937 gen(7u);
  std::uniform_int_distribution<std::int32_t> any(kernels::int32_min_value, kernels::int32_max_value);
  std::uniform_int_distribution<std::int32_t> mu(std::int32_t{1} << 30, kernels::int32_max_value);
  std::uniform_int_distribution<int> sh(0, 31);
  for (int i = 0; i < 20000; ++i) {
    p.acc.push_back(any(gen));
    p.mult.push_back(mu(gen));
    p.shift.push_back(sh(gen));
  }
  return p;
}

__global__ void requant_probe_kernel(const std::int32_t* acc, const std::int32_t* mult, const int* shift, int count,
                                     std::int8_t* out) {
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (i < count) out[i] = gpu::requantize(acc[i], mult[i], shift[i]);
}

std::string check_requant_values(const requant_probe& p, const std::vector<std::int8_t>& got, const char* where) {
  for (std::size_t i = 0; i < p.acc.size(); ++i) {
    const std::int8_t want = kernels::requantize(p.acc[i], p.mult[i], p.shift[i]);
    if (got[i] != want)
      return std::string(where) + " requantize(" + std::to_string(p.acc[i]) + ", " + std::to_string(p.mult[i]) + ", " +
             std::to_string(p.shift[i]) + ") = " + std::to_string(got[i]) + ", reference " + std::to_string(want);
  }
  return {};
}

std::string device_requant_check() {
  const requant_probe p = make_requant_probe();
  const int count = static_cast<int>(p.acc.size());
  cudaStream_t stream = gpu::thread_stream();
  auto acc = gpu::upload(p.acc.data(), p.acc.size(), stream);
  auto mult = gpu::upload(p.mult.data(), p.mult.size(), stream);
  auto shift = gpu::upload(p.shift.data(), p.shift.size(), stream);
  gpu::device_buffer<std::int8_t> out(p.acc.size(), stream);
  requant_probe_kernel<<<(count + 255) / 256, 256, 0, stream>>>(acc.get(), mult.get(), shift.get(), count, out.get());
  CUDA_CHECK_LAUNCH();
  std::vector<std::int8_t> got(p.acc.size());
  gpu::download_and_sync(got.data(), out.get(), got.size(), stream);
  return check_requant_values(p, got, "device");
}

// ---- one backend on the device ---------------------------------------------------------------

std::string check_backend(const backend& be) {
  const backend& ref = reference_backend();
  random_source rnd;
  for (const auto& c : gemm_cases) {
    const auto a = rnd.bytes(static_cast<std::size_t>(c.m) * c.k);
    const auto b = rnd.bytes(static_cast<std::size_t>(c.n) * c.k);
    std::vector<std::int32_t> got(static_cast<std::size_t>(c.m) * c.n, -7), want(got.size(), 0);
    be.gemm_s8s8s32(a.data(), b.data(), got.data(), c.m, c.n, c.k);
    ref.gemm_s8s8s32(a.data(), b.data(), want.data(), c.m, c.n, c.k);
    if (auto e = compare(gemm_name(be.name, "gemm_s8s8s32", c), got, want); !e.empty()) return e;

    for (bool relu : {false, true}) {
      const auto bias = rnd.bias(static_cast<std::size_t>(c.n));
      const requant_params rq = rnd.rq(relu);
      const packed_weights pb = be.pack_weights(b.data(), c.n, c.k);
      const packed_weights pr = ref.pack_weights(b.data(), c.n, c.k);
      std::vector<std::int8_t> out(static_cast<std::size_t>(c.m) * c.n, 99), ref_out(out.size(), 0);
      be.dense(a.data(), c.m, pb, c.n, c.k, bias.data(), rq, out.data());
      ref.dense(a.data(), c.m, pr, c.n, c.k, bias.data(), rq, ref_out.data());
      if (auto e = compare(gemm_name(be.name, relu ? "dense+relu" : "dense", c), out, ref_out); !e.empty()) return e;
    }
  }
  for (const auto& s : conv_cases) {
    const int batch = 2;
    const int k = s.in_c * s.kernel_h * s.kernel_w;
    const auto in = rnd.bytes(static_cast<std::size_t>(batch) * s.in_c * s.in_h * s.in_w);
    const auto w = rnd.bytes(static_cast<std::size_t>(s.out_c) * k);
    const auto bias = rnd.bias(static_cast<std::size_t>(s.out_c));
    const requant_params rq = rnd.rq(true);
    const packed_weights pb = be.pack_weights(w.data(), s.out_c, k);
    const packed_weights pr = ref.pack_weights(w.data(), s.out_c, k);
    std::vector<std::int8_t> out(static_cast<std::size_t>(batch) * s.out_c * s.out_h() * s.out_w(), 99),
        ref_out(out.size(), 0);
    be.conv2d(in.data(), batch, pb, bias.data(), s, rq, out.data());
    ref.conv2d(in.data(), batch, pr, bias.data(), s, rq, ref_out.data());
    if (auto e = compare(conv_name(be.name, s), out, ref_out); !e.empty()) return e;
  }
  for (const auto& s : pool_cases) {
    const int batch = 3;
    const auto in = rnd.bytes(static_cast<std::size_t>(batch) * s.channels * s.in_h * s.in_w);
    std::vector<std::int8_t> out(static_cast<std::size_t>(batch) * s.channels * s.out_h() * s.out_w(), 99),
        ref_out(out.size(), 0);
    be.maxpool(in.data(), batch, s, out.data());
    ref.maxpool(in.data(), batch, s, ref_out.data());
    if (auto e = compare(pool_name(be.name, s), out, ref_out); !e.empty()) return e;
  }
  return {};
}

// ---- host emulation ------------------------------------------------------------------------------

// Zero-padded rows_p x cols_p copy of a rows x cols matrix, as 32-bit words (what the kernel reads).
std::vector<std::int32_t> padded_words(const std::int8_t* src, int rows, int cols, int rows_p, int cols_p) {
  std::vector<std::int8_t> bytes(static_cast<std::size_t>(rows_p) * cols_p, 0);
  for (int r = 0; r < rows; ++r)
    if (cols > 0)
      std::memcpy(bytes.data() + static_cast<std::size_t>(r) * cols_p, src + static_cast<std::size_t>(r) * cols, cols);
  std::vector<std::int32_t> words(bytes.size() / 4);
  if (!words.empty()) std::memcpy(words.data(), bytes.data(), bytes.size());
  return words;
}

// Runs gemm_s8_tiled_kernel's steps for every block and thread, in the kernel's phase order.
template <class Store>
void emulate_gemm(const std::int32_t* a32, const std::int32_t* b32, int m, int n, int kp, const Store& store) {
  const dim3 grid = gpu::gemm_grid(m, n, kp);
  const int kw = kp / 4;
  gpu::gemm_tile_smem s{};
  using acc_t = std::int32_t[gpu::gemm_per_thread][gpu::gemm_per_thread];
  std::vector<std::array<std::array<std::int32_t, gpu::gemm_per_thread>, gpu::gemm_per_thread>> accs(
      gpu::gemm_threads);
  for (unsigned bx = 0; bx < grid.x; ++bx)
    for (unsigned by = 0; by < grid.y; ++by) {
      const int row0 = static_cast<int>(bx) * gpu::gemm_tile_m;
      const int col0 = static_cast<int>(by) * gpu::gemm_tile_n;
      for (auto& t : accs)
        for (auto& r : t) r.fill(0);
      for (int w0 = 0; w0 < kw; w0 += gpu::gemm_tile_kw) {
        for (int tid = 0; tid < gpu::gemm_threads; ++tid) gpu::gemm_load_tiles(s, tid, a32, b32, m, n, kw, row0, col0, w0);
        for (int tid = 0; tid < gpu::gemm_threads; ++tid) {
          acc_t acc;
          for (int r = 0; r < gpu::gemm_per_thread; ++r)
            for (int c = 0; c < gpu::gemm_per_thread; ++c) acc[r][c] = accs[tid][r][c];
          gpu::gemm_accumulate_tiles(s, tid, acc);
          for (int r = 0; r < gpu::gemm_per_thread; ++r)
            for (int c = 0; c < gpu::gemm_per_thread; ++c) accs[tid][r][c] = acc[r][c];
        }
      }
      for (int tid = 0; tid < gpu::gemm_threads; ++tid) {
        acc_t acc;
        for (int r = 0; r < gpu::gemm_per_thread; ++r)
          for (int c = 0; c < gpu::gemm_per_thread; ++c) acc[r][c] = accs[tid][r][c];
        gpu::gemm_store_tile(store, tid, row0, col0, m, n, acc);
      }
    }
}

std::string emulation_check() {
  {
    const requant_probe p = make_requant_probe();
    std::vector<std::int8_t> got(p.acc.size());
    for (std::size_t i = 0; i < got.size(); ++i) got[i] = gpu::requantize(p.acc[i], p.mult[i], p.shift[i]);
    if (auto e = check_requant_values(p, got, "host emulation"); !e.empty()) return e;
  }
  const backend& ref = reference_backend();
  const char* name = "host emulation";
  random_source rnd;
  for (const auto& c : gemm_cases) {
    const auto a = rnd.bytes(static_cast<std::size_t>(c.m) * c.k);
    const auto b = rnd.bytes(static_cast<std::size_t>(c.n) * c.k);
    const int kp = gpu::round_up4(c.k);
    const auto a32 = padded_words(a.data(), c.m, c.k, c.m, kp);
    const auto b32 = padded_words(b.data(), c.n, c.k, gpu::round_up4(c.n), kp);
    std::vector<std::int32_t> got(static_cast<std::size_t>(c.m) * c.n, -7), want(got.size(), 0);
    emulate_gemm(a32.data(), b32.data(), c.m, c.n, kp, gpu::int32_store{got.data(), c.n});
    ref.gemm_s8s8s32(a.data(), b.data(), want.data(), c.m, c.n, c.k);
    if (auto e = compare(gemm_name(name, "gemm_s8s8s32", c), got, want); !e.empty()) return e;

    for (bool relu : {false, true}) {
      const auto bias = rnd.bias(static_cast<std::size_t>(c.n));
      const requant_params rq = rnd.rq(relu);
      const packed_weights pr = ref.pack_weights(b.data(), c.n, c.k);
      std::vector<std::int8_t> out(static_cast<std::size_t>(c.m) * c.n, 99), ref_out(out.size(), 0);
      emulate_gemm(a32.data(), b32.data(), c.m, c.n, kp,
                   gpu::requant_store{out.data(), bias.data(), gpu::to_args(rq), c.n, 1});
      ref.dense(a.data(), c.m, pr, c.n, c.k, bias.data(), rq, ref_out.data());
      if (auto e = compare(gemm_name(name, relu ? "dense+relu" : "dense", c), out, ref_out); !e.empty()) return e;
    }
  }
  for (const auto& s : conv_cases) {
    const int batch = 2;
    const gpu::conv_geometry g = gpu::make_conv_geometry(s);
    const auto in = rnd.bytes(static_cast<std::size_t>(batch) * s.in_c * s.in_h * s.in_w);
    const auto w = rnd.bytes(static_cast<std::size_t>(s.out_c) * g.k);
    const auto bias = rnd.bias(static_cast<std::size_t>(s.out_c));
    const requant_params rq = rnd.rq(true);
    const int hw = g.out_h * g.out_w;
    const int m = batch * hw;
    std::vector<std::int8_t> col(static_cast<std::size_t>(m) * g.kp);
    for (std::size_t idx = 0; idx < col.size(); ++idx) col[idx] = gpu::im2col_value(in.data(), g, idx);
    const auto a32 = padded_words(col.data(), m, g.kp, m, g.kp);
    const auto w32 = padded_words(w.data(), s.out_c, g.k, gpu::round_up4(s.out_c), g.kp);
    std::vector<std::int8_t> out(static_cast<std::size_t>(m) * s.out_c, 99), ref_out(out.size(), 0);
    emulate_gemm(a32.data(), w32.data(), m, s.out_c, g.kp,
                 gpu::requant_store{out.data(), bias.data(), gpu::to_args(rq), s.out_c, hw});
    const packed_weights pr = ref.pack_weights(w.data(), s.out_c, g.k);
    ref.conv2d(in.data(), batch, pr, bias.data(), s, rq, ref_out.data());
    if (auto e = compare(conv_name(name, s), out, ref_out); !e.empty()) return e;
  }
  for (const auto& s : pool_cases) {
    const int batch = 3;
    const gpu::pool_geometry g = gpu::make_pool_geometry(s);
    const auto in = rnd.bytes(static_cast<std::size_t>(batch) * s.channels * s.in_h * s.in_w);
    std::vector<std::int8_t> out(static_cast<std::size_t>(batch) * s.channels * g.out_h * g.out_w, 99),
        ref_out(out.size(), 0);
    for (std::size_t idx = 0; idx < out.size(); ++idx) out[idx] = gpu::maxpool_value(in.data(), g, idx);
    ref.maxpool(in.data(), batch, s, ref_out.data());
    if (auto e = compare(pool_name(name, s), out, ref_out); !e.empty()) return e;
  }
  return {};
}

} // namespace

std::string cuda_host_emulation_check() {
  try {
    return emulation_check();
  } catch (const std::exception& e) {
    return std::string("host emulation threw: ") + e.what();
  }
}

std::string cuda_self_test() {
  const std::string& reason = gpu::device_unavailable_reason();
  if (!reason.empty()) return reason;
  try {
    if (auto e = device_requant_check(); !e.empty()) return e;
    for (const backend* be : {&cuda_backend(), &cublaslt_backend()}) {
      const std::string why = be->unavailable_reason();
      if (!why.empty()) return std::string(be->name) + " unavailable: " + why;
      if (auto e = check_backend(*be); !e.empty()) return e;
    }
  } catch (const std::exception& e) {
    return std::string("cuda self-test threw: ") + e.what();
  }
  return {};
}

} // namespace haca::kernels
