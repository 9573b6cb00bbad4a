// Every op of every usable backend against the reference backend, byte for byte (in the spirit
// of llama.cpp's test-backend-ops). The cpu backend is run once per ISA path this CPU supports
// (scalar, AVX2, AVX-512 VNNI) through its cpu_force_isa testing hook.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/backend_cpu.hpp"
#include "kernels/cpu/cpu_isa.hpp"
#include "kernels/ops.hpp"

using namespace haca::kernels;

namespace {

std::vector<std::int8_t> random_i8(std::mt19937_64& rng, std::size_t n) {
  std::vector<std::int8_t> v(n);
  std::uniform_int_distribution<int> d(-128, 127);
  for (auto& x : v) x = static_cast<std::int8_t>(d(rng));
  return v;
}

std::vector<std::int32_t> random_bias(std::mt19937_64& rng, std::size_t n, bool wide) {
  std::vector<std::int32_t> v(n);
  std::uniform_int_distribution<std::int32_t> small(-200000, 200000);
  std::uniform_int_distribution<std::int32_t> all(std::numeric_limits<std::int32_t>::min(),
                                                  std::numeric_limits<std::int32_t>::max());
  for (auto& x : v) x = wide ? all(rng) : small(rng);
  return v;
}

requant_params random_rq(std::mt19937_64& rng) {
  requant_params rq;
  rq.multiplier = std::uniform_int_distribution<std::int32_t>(std::int32_t{1} << 30,
                                                              std::numeric_limits<std::int32_t>::max())(rng);
  rq.shift = std::uniform_int_distribution<int>(0, 31)(rng);
  rq.relu = (rng() & 1) != 0;
  return rq;
}

// One variant per (backend, ISA path): the cpu backend once per ISA the CPU supports.
struct variant {
  const backend* be;
  std::string label;
  std::function<void()> select; // makes this variant current
};

std::vector<variant> variants() {
  std::vector<variant> out;
  for (const backend* be : compiled_backends()) {
    if (be == &reference_backend()) continue;
    const std::string why = be->unavailable_reason();
    if (!why.empty()) {
      MESSAGE("backend '" << be->name << "' is compiled in but not usable here: " << why);
      continue;
    }
    if (be == &cpu_backend()) {
      for (cpu_isa isa : {cpu_isa::scalar, cpu_isa::avx2, cpu_isa::avx512vnni}) {
        if (!cpu_force_isa(isa)) {
          MESSAGE("cpu backend: ISA path " << std::string(cpu_isa_name(isa)) << " not supported by this CPU, not tested");
          continue;
        }
        out.push_back({be, std::string("cpu/") + cpu_isa_name(isa), [isa] { cpu_force_isa(isa); }});
      }
      cpu_force_isa(cpu_detected_isa());
    } else {
      out.push_back({be, be->name, [] {}});
    }
  }
  return out;
}

struct restore_isa {
  ~restore_isa() { cpu_force_isa(cpu_detected_isa()); }
};

template <typename T>
std::size_t first_diff(const std::vector<T>& a, const std::vector<T>& b) {
  for (std::size_t i = 0; i < a.size(); ++i)
    if (a[i] != b[i]) return i;
  return a.size();
}

const int dims[] = {1, 3, 17, 255, 1000};

} // namespace

TEST_CASE("backends: every usable backend is listed, the reference last") {
  const auto usable = usable_backends();
  REQUIRE(!usable.empty());
  CHECK(usable.back() == &reference_backend());
  CHECK(find_backend("cpu") == &cpu_backend());
  CHECK(cpu_backend().unavailable_reason().empty());
  MESSAGE("cpu backend ISA here: " << std::string(cpu_backend_isa()) << " (detected " << std::string(cpu_isa_name(cpu_detected_isa()))
                                   << "), threads: " << cpu_threads());
}

TEST_CASE("backends: gemm_s8s8s32 and dense equal the reference on awkward shapes") {
  restore_isa restore;
  const auto vs = variants();
  std::mt19937_64 rng(20261125);
  const backend& ref = reference_backend();
  int shapes = 0;
  for (int m : dims)
    for (int n : dims)
      for (int k : dims) {
        // The reference's plain loops are slow: keep the big cubes out (255 x 1000 x 1000 etc.).
        if (static_cast<double>(m) * n * k > 2.6e7) continue;
        ++shapes;
        const auto a = random_i8(rng, static_cast<std::size_t>(m) * k);
        const auto b = random_i8(rng, static_cast<std::size_t>(n) * k);
        const auto bias = random_bias(rng, static_cast<std::size_t>(n), (shapes % 3) == 0);
        const requant_params rq = random_rq(rng);
        std::vector<std::int32_t> want_c(static_cast<std::size_t>(m) * n);
        ref.gemm_s8s8s32(a.data(), b.data(), want_c.data(), m, n, k);
        const auto ref_w = ref.pack_weights(b.data(), n, k);
        std::vector<std::int8_t> want_o(static_cast<std::size_t>(m) * n);
        ref.dense(a.data(), m, ref_w, n, k, bias.data(), rq, want_o.data());
        for (const variant& v : vs) {
          v.select();
          CAPTURE(v.label);
          CAPTURE(m);
          CAPTURE(n);
          CAPTURE(k);
          std::vector<std::int32_t> c(want_c.size(), 0x5a5a5a5a);
          v.be->gemm_s8s8s32(a.data(), b.data(), c.data(), m, n, k);
          CHECK(first_diff(c, want_c) == c.size());
          const auto w = v.be->pack_weights(b.data(), n, k);
          std::vector<std::int8_t> o(want_o.size(), 0x5a);
          v.be->dense(a.data(), m, w, n, k, bias.data(), rq, o.data());
          CAPTURE(rq.multiplier);
          CAPTURE(rq.shift);
          CAPTURE(rq.relu);
          CHECK(first_diff(o, want_o) == o.size());
        }
      }
  MESSAGE(shapes << " gemm/dense shapes x " << vs.size() << " backend paths");
}

TEST_CASE("backends: saturated operands (all 127 / all -128) and k not a multiple of 4 or 64") {
  restore_isa restore;
  const auto vs = variants();
  std::mt19937_64 rng(7);
  const backend& ref = reference_backend();
  const std::int8_t extremes[] = {127, -128};
  for (int k : {1, 2, 3, 5, 63, 65, 127, 1001, 4099})
    for (std::int8_t av : extremes)
      for (std::int8_t bv : extremes) {
        const int m = 9, n = 33;
        const std::vector<std::int8_t> a(static_cast<std::size_t>(m) * k, av), b(static_cast<std::size_t>(n) * k, bv);
        const auto bias = random_bias(rng, static_cast<std::size_t>(n), false);
        requant_params rq = random_rq(rng);
        std::vector<std::int32_t> want_c(static_cast<std::size_t>(m) * n);
        ref.gemm_s8s8s32(a.data(), b.data(), want_c.data(), m, n, k);
        std::vector<std::int8_t> want_o(static_cast<std::size_t>(m) * n);
        ref.dense(a.data(), m, ref.pack_weights(b.data(), n, k), n, k, bias.data(), rq, want_o.data());
        for (const variant& v : vs) {
          v.select();
          CAPTURE(v.label);
          CAPTURE(k);
          CAPTURE(int(av));
          CAPTURE(int(bv));
          std::vector<std::int32_t> c(want_c.size());
          v.be->gemm_s8s8s32(a.data(), b.data(), c.data(), m, n, k);
          CHECK(c == want_c);
          std::vector<std::int8_t> o(want_o.size());
          v.be->dense(a.data(), m, v.be->pack_weights(b.data(), n, k), n, k, bias.data(), rq, o.data());
          CHECK(o == want_o);
        }
      }
}

TEST_CASE("backends: the requantizing epilogue on edge accumulators (bias sweep through dense)") {
  // a = 0 and k = 1 make every accumulator 0, so out[j] = epilogue(bias[j]): one dense call
  // checks the vectorized requantization on thousands of chosen int32 values at once.
  restore_isa restore;
  const auto vs = variants();
  std::mt19937_64 rng(99);
  const backend& ref = reference_backend();
  std::vector<std::int32_t> bias;
  const std::int32_t lo = std::numeric_limits<std::int32_t>::min(), hi = std::numeric_limits<std::int32_t>::max();
  for (std::int32_t x : {lo, lo + 1, hi, hi - 1, 0, 1, -1}) bias.push_back(x);
  for (int e = 0; e < 31; ++e)
    for (std::int32_t d : {-1, 0, 1}) {
      bias.push_back((std::int32_t{1} << e) + d);
      bias.push_back(-(std::int32_t{1} << e) + d);
      bias.push_back((std::int32_t{3} << e >> 1) + d); // halves
      bias.push_back(-(std::int32_t{3} << e >> 1) + d);
    }
  const auto more = random_bias(rng, 3000, true);
  bias.insert(bias.end(), more.begin(), more.end());
  const int n = static_cast<int>(bias.size()), m = 2, k = 1;
  const std::vector<std::int8_t> a(static_cast<std::size_t>(m) * k, 0);
  const auto b = random_i8(rng, static_cast<std::size_t>(n) * k);
  for (int trial = 0; trial < 40; ++trial) {
    requant_params rq = random_rq(rng);
    if (trial < 32) rq.shift = trial;
    if (trial == 33) rq.multiplier = std::int32_t{1} << 30;
    if (trial == 34) rq.multiplier = hi;
    std::vector<std::int8_t> want(static_cast<std::size_t>(m) * n);
    ref.dense(a.data(), m, ref.pack_weights(b.data(), n, k), n, k, bias.data(), rq, want.data());
    for (const variant& v : vs) {
      v.select();
      CAPTURE(v.label);
      CAPTURE(rq.multiplier);
      CAPTURE(rq.shift);
      CAPTURE(rq.relu);
      std::vector<std::int8_t> o(want.size());
      v.be->dense(a.data(), m, v.be->pack_weights(b.data(), n, k), n, k, bias.data(), rq, o.data());
      const std::size_t at = first_diff(o, want);
      CAPTURE(at);
      CHECK(at == o.size());
    }
  }
}

TEST_CASE("backends: conv2d (stride 1/2, pad 0/1, kernels 1/3/5, odd sizes) equals the reference") {
  restore_isa restore;
  const auto vs = variants();
  std::mt19937_64 rng(4242);
  const backend& ref = reference_backend();
  int cases = 0;
  for (int kernel : {1, 3, 5})
    for (int stride : {1, 2})
      for (int pad : {0, 1})
        for (int trial = 0; trial < 2; ++trial) {
          conv2d_shape s;
          s.in_c = std::vector<int>{1, 3, 16, 7}[rng() % 4];
          s.in_h = kernel + static_cast<int>(rng() % 24);
          s.in_w = kernel + static_cast<int>(rng() % 24);
          s.out_c = std::vector<int>{1, 5, 16, 33}[rng() % 4];
          s.kernel_h = s.kernel_w = kernel;
          s.stride = stride;
          s.pad = pad;
          const int batch = 1 + static_cast<int>(rng() % 4);
          if (s.out_h() < 1 || s.out_w() < 1) continue;
          ++cases;
          const int kdim = s.in_c * kernel * kernel;
          const auto in = random_i8(rng, static_cast<std::size_t>(batch) * s.in_c * s.in_h * s.in_w);
          const auto w = random_i8(rng, static_cast<std::size_t>(s.out_c) * kdim);
          const auto bias = random_bias(rng, static_cast<std::size_t>(s.out_c), false);
          const requant_params rq = random_rq(rng);
          const std::size_t out_n = static_cast<std::size_t>(batch) * s.out_c * s.out_h() * s.out_w();
          std::vector<std::int8_t> want(out_n);
          ref.conv2d(in.data(), batch, ref.pack_weights(w.data(), s.out_c, kdim), bias.data(), s, rq, want.data());
          for (const variant& v : vs) {
            v.select();
            CAPTURE(v.label);
            CAPTURE(s.in_c);
            CAPTURE(s.in_h);
            CAPTURE(s.in_w);
            CAPTURE(s.out_c);
            CAPTURE(kernel);
            CAPTURE(stride);
            CAPTURE(pad);
            CAPTURE(batch);
            std::vector<std::int8_t> o(out_n, 0x5a);
            v.be->conv2d(in.data(), batch, v.be->pack_weights(w.data(), s.out_c, kdim), bias.data(), s, rq, o.data());
            CHECK(first_diff(o, want) == o.size());
          }
        }
  // A model-sized layer: big enough for the cpu backend to spread images over its threads.
  conv2d_shape s{16, 28, 28, 32, 3, 3, 1, 1};
  const int batch = 8, kdim = 16 * 9;
  const auto in = random_i8(rng, static_cast<std::size_t>(batch) * 16 * 28 * 28);
  const auto w = random_i8(rng, static_cast<std::size_t>(32) * kdim);
  const auto bias = random_bias(rng, 32, false);
  const requant_params rq = random_rq(rng);
  std::vector<std::int8_t> want(static_cast<std::size_t>(batch) * 32 * 28 * 28);
  ref.conv2d(in.data(), batch, ref.pack_weights(w.data(), 32, kdim), bias.data(), s, rq, want.data());
  for (const variant& v : vs) {
    v.select();
    CAPTURE(v.label);
    std::vector<std::int8_t> o(want.size());
    for (int b : {batch, 1}) { // batch 8: images across threads; batch 1: one GEMM split across threads
      std::fill(o.begin(), o.end(), 0);
      v.be->conv2d(in.data(), b, v.be->pack_weights(w.data(), 32, kdim), bias.data(), s, rq, o.data());
      const std::size_t len = static_cast<std::size_t>(b) * 32 * 28 * 28;
      CHECK(std::memcmp(o.data(), want.data(), len) == 0);
    }
  }
  MESSAGE((cases + 1) << " conv2d shapes x " << vs.size() << " backend paths");
}

namespace {

// Every backend path pools `in` to the reference's bytes.
void check_maxpool(const std::vector<variant>& vs, const maxpool_shape& s, int batch,
                   const std::vector<std::int8_t>& in) {
  const std::size_t out_n = static_cast<std::size_t>(batch) * s.channels * s.out_h() * s.out_w();
  std::vector<std::int8_t> want(out_n);
  reference_backend().maxpool(in.data(), batch, s, want.data());
  for (const variant& v : vs) {
    v.select();
    CAPTURE(v.label);
    CAPTURE(s.kernel);
    CAPTURE(s.stride);
    CAPTURE(s.in_h);
    CAPTURE(s.in_w);
    std::vector<std::int8_t> o(out_n, 0x5a);
    v.be->maxpool(in.data(), batch, s, o.data());
    CHECK(o == want);
  }
}

} // namespace

TEST_CASE("backends: maxpool equals the reference") {
  restore_isa restore;
  const auto vs = variants();
  std::mt19937_64 rng(31337);
  for (int trial = 0; trial < 24; ++trial) {
    maxpool_shape s;
    s.channels = 1 + static_cast<int>(rng() % 17);
    s.kernel = 1 + static_cast<int>(rng() % 3);
    s.stride = 1 + static_cast<int>(rng() % 3);
    s.in_h = s.kernel + static_cast<int>(rng() % 30);
    s.in_w = s.kernel + static_cast<int>(rng() % 30);
    const int batch = 1 + static_cast<int>(rng() % 3);
    auto in = random_i8(rng, static_cast<std::size_t>(batch) * s.channels * s.in_h * s.in_w);
    if (trial % 4 == 0) std::fill(in.begin(), in.end(), std::int8_t{-128});
    check_maxpool(vs, s, batch, in);
  }
}

TEST_CASE("backends: 2x2 stride-2 maxpool equals the reference on narrow, odd and wide planes") {
  restore_isa restore;
  const auto vs = variants();
  std::mt19937_64 rng(2202);
  for (int w : {2, 3, 5, 14, 28, 31, 32, 33, 63, 64, 65, 66, 127, 128, 129, 200}) {
    maxpool_shape s;
    s.channels = 1 + static_cast<int>(rng() % 5);
    s.kernel = 2;
    s.stride = 2;
    s.in_h = 2 + static_cast<int>(rng() % 9);
    s.in_w = w;
    const int batch = 1 + static_cast<int>(rng() % 3);
    check_maxpool(vs, s, batch, random_i8(rng, static_cast<std::size_t>(batch) * s.channels * s.in_h * s.in_w));
  }
}

TEST_CASE("cpu backend: weights packed under one ISA run under every other; packed int32 GEMM") {
  restore_isa restore;
  std::mt19937_64 rng(5);
  const int m = 37, n = 70, k = 131;
  const auto a = random_i8(rng, static_cast<std::size_t>(m) * k);
  const auto b = random_i8(rng, static_cast<std::size_t>(n) * k);
  std::vector<std::int32_t> want(static_cast<std::size_t>(m) * n);
  reference_backend().gemm_s8s8s32(a.data(), b.data(), want.data(), m, n, k);
  const auto w = cpu_backend().pack_weights(b.data(), n, k);
  for (cpu_isa isa : {cpu_isa::scalar, cpu_isa::avx2, cpu_isa::avx512vnni}) {
    if (!cpu_force_isa(isa)) continue;
    CAPTURE(cpu_isa_name(isa));
    CHECK(std::string(cpu_backend_isa()) == cpu_isa_name(isa));
    std::vector<std::int32_t> c(want.size());
    cpu_gemm_packed_s32(a.data(), m, w, n, k, c.data());
    CHECK(c == want);
  }
}
