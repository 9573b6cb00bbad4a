#include <doctest/doctest.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kernels/model.hpp"
#include "kernels/ops.hpp"
#include "kernels/tensor.hpp"
#include "verify/blake3.hpp"
#include "verify/hash.hpp"
#include "verify/merkle.hpp"

using namespace haca;
using namespace haca::kernels;

namespace {

// The plain-arithmetic meaning of the fixed-point pipeline: the doubling high-mul rounds
// a*b/2^31 to nearest with ties toward +infinity (gemmlowp's nudge), then the shift rounds
// half away from zero, then int8 saturation.
std::int32_t naive_high_mul(std::int32_t a, std::int32_t b) {
  if (a == std::numeric_limits<std::int32_t>::min() && b == a) return std::numeric_limits<std::int32_t>::max();
  const std::int64_t ab = static_cast<std::int64_t>(a) * b;
  return static_cast<std::int32_t>((ab + (std::int64_t{1} << 30)) >> 31); // arithmetic shift = floor
}

std::int8_t naive_requantize(std::int32_t acc, std::int32_t mult, int shift) {
  const double x = static_cast<double>(naive_high_mul(acc, mult)) / std::ldexp(1.0, shift); // exact
  const double r = std::round(x); // half away from zero
  return static_cast<std::int8_t>(std::clamp(r, -128.0, 127.0));
}

tensor random_input(std::mt19937_64& rng, int rows, int cols) {
  tensor t;
  t.type = dtype::i8;
  t.shape = {rows, cols};
  t.data.resize(static_cast<std::size_t>(rows) * cols);
  for (auto& c : t.data) c = static_cast<char>(static_cast<int>(rng() % 256) - 128);
  return t;
}

struct parsed_file {
  nlohmann::json header;
  std::string data;
};

parsed_file split_file(const std::string& bytes) {
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[i]);
  return {nlohmann::json::parse(bytes.substr(8, n)), bytes.substr(8 + n)};
}

std::string join_file(const nlohmann::json& header, const std::string& data) {
  const std::string text = header.dump();
  std::string out;
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((text.size() >> (8 * i)) & 0xff));
  return out + text + data;
}

model small_model() { return generate_mlp(7, {16, 8, 4}, "small"); }

} // namespace

TEST_CASE("rounding_divide_by_pot rounds half away from zero") {
  CHECK(rounding_divide_by_pot(3, 1) == 2);
  CHECK(rounding_divide_by_pot(-3, 1) == -2);
  CHECK(rounding_divide_by_pot(5, 2) == 1);
  CHECK(rounding_divide_by_pot(-5, 2) == -1);
  CHECK(rounding_divide_by_pot(6, 2) == 2);
  CHECK(rounding_divide_by_pot(-6, 2) == -2);
  CHECK(rounding_divide_by_pot(-7, 2) == -2);
  CHECK(rounding_divide_by_pot(123, 0) == 123);
  CHECK(rounding_divide_by_pot(std::numeric_limits<std::int32_t>::min(), 31) == -1);
  CHECK(rounding_divide_by_pot(std::numeric_limits<std::int32_t>::max(), 31) == 1);
}

TEST_CASE("saturating_rounding_doubling_high_mul saturates the one overflowing product") {
  const auto mn = std::numeric_limits<std::int32_t>::min();
  CHECK(saturating_rounding_doubling_high_mul(mn, mn) == std::numeric_limits<std::int32_t>::max());
  CHECK(saturating_rounding_doubling_high_mul(1 << 30, 1 << 30) == 1 << 29);
  // -1.5 rounds to -1 (gemmlowp's nudge: negative ties go toward zero), +1.5 to 2.
  CHECK(saturating_rounding_doubling_high_mul(-3, 1 << 30) == -1);
  CHECK(saturating_rounding_doubling_high_mul(3, 1 << 30) == 2);
}

TEST_CASE("requantize matches a naive int64/double formula on many random values, saturation and ties included") {
  std::mt19937_64 rng(42);
  const auto mn = std::numeric_limits<std::int32_t>::min();
  const auto mx = std::numeric_limits<std::int32_t>::max();
  std::vector<std::int32_t> accs = {0, 1, -1, 2, -2, 3, -3, mn, mx, mn + 1, mx - 1, 1 << 20, -(1 << 20)};
  std::vector<std::int32_t> mults = {1 << 30, (1 << 30) + 1, mx, mx - 1, 1518500250};
  int checked = 0, saturated = 0, negative_ties = 0;
  for (int i = 0; i < 200000; ++i) {
    std::int32_t acc;
    switch (i % 4) {
    case 0: acc = static_cast<std::int32_t>(rng()); break;
    case 1: acc = static_cast<std::int32_t>(rng() % 2000001) - 1000000; break;
    case 2: acc = static_cast<std::int32_t>(rng() % 20001) - 10000; break;
    default: acc = accs[rng() % accs.size()]; break;
    }
    const std::int32_t mult = (i % 5 == 0) ? mults[rng() % mults.size()]
                                           : static_cast<std::int32_t>((1u << 30) + rng() % (1u << 30));
    const int shift = static_cast<int>(rng() % 32);
    const auto got = requantize(acc, mult, shift);
    const auto want = naive_requantize(acc, mult, shift);
    if (got != want) {
      FAIL_CHECK("acc=" << acc << " mult=" << mult << " shift=" << shift << " got=" << int(got)
                        << " want=" << int(want));
    }
    ++checked;
    if (got == 127 || got == -128) ++saturated;
    // An exact tie at the shift: the high-mul result is odd * 2^(shift-1), negative.
    const std::int32_t h = naive_high_mul(acc, mult);
    if (shift > 0 && h < 0 && (static_cast<std::int64_t>(h) & ((std::int64_t{1} << shift) - 1)) ==
                                  (std::int64_t{1} << (shift - 1)))
      ++negative_ties;
  }
  // Exact negative ties at the shift, built on purpose.
  for (int shift = 1; shift < 31; ++shift) {
    for (std::int32_t k = -50; k < 0; ++k) {
      const std::int64_t v = (2 * static_cast<std::int64_t>(k) + 1) << (shift - 1);
      if (v < mn) continue;
      const auto x = static_cast<std::int32_t>(v);
      const double want = std::round(static_cast<double>(x) / std::ldexp(1.0, shift));
      CHECK(rounding_divide_by_pot(x, shift) == static_cast<std::int32_t>(want));
      ++negative_ties;
    }
  }
  CHECK(checked == 200000);
  CHECK(saturated > 1000);
  CHECK(negative_ties > 100);
}

TEST_CASE("quantize_multiplier gives a multiplier in [2^30, 2^31) and a shift that reproduce the scale") {
  for (double scale : {0.999999, 0.75, 0.5, 0.4999, 0.1, 1.0 / 3.0, 1e-3, 2.6e-4, 1e-6, 1e-9}) {
    std::int32_t m = 0;
    int s = -1;
    quantize_multiplier(scale, m, s);
    CHECK(m >= (1 << 30));
    CHECK(s >= 0);
    CHECK(s <= 31);
    const double back = static_cast<double>(m) / std::ldexp(1.0, 31) / std::ldexp(1.0, s);
    CHECK(std::abs(back - scale) / scale < 1e-9);
  }
}

TEST_CASE("reference gemm equals a naive int64 triple loop on awkward shapes") {
  std::mt19937_64 rng(1);
  const auto& be = reference_backend();
  for (int m : {1, 3, 17, 255})
    for (int n : {1, 3, 17, 255})
      for (int k : {1, 3, 17, 255, 7, 130}) {
        std::vector<std::int8_t> a(static_cast<std::size_t>(m) * k), b(static_cast<std::size_t>(n) * k);
        for (auto& x : a) x = static_cast<std::int8_t>(static_cast<int>(rng() % 256) - 128);
        for (auto& x : b) x = static_cast<std::int8_t>(static_cast<int>(rng() % 256) - 128);
        std::vector<std::int32_t> c(static_cast<std::size_t>(m) * n, 12345);
        be.gemm_s8s8s32(a.data(), b.data(), c.data(), m, n, k);
        bool same = true;
        for (int i = 0; i < m && same; ++i)
          for (int j = 0; j < n && same; ++j) {
            std::int64_t s = 0;
            for (int p = 0; p < k; ++p) s += static_cast<std::int64_t>(a[i * k + p]) * b[j * k + p];
            same = s == c[static_cast<std::size_t>(i) * n + j];
          }
        CHECK_MESSAGE(same, "m=" << m << " n=" << n << " k=" << k);
      }
}

TEST_CASE("reference dense adds the bias, requantizes and applies relu only when asked") {
  const auto& be = reference_backend();
  std::mt19937_64 rng(3);
  const int m = 5, n = 13, k = 37;
  std::vector<std::int8_t> a(m * k), b(n * k);
  for (auto& x : a) x = static_cast<std::int8_t>(static_cast<int>(rng() % 256) - 128);
  for (auto& x : b) x = static_cast<std::int8_t>(static_cast<int>(rng() % 256) - 128);
  std::vector<std::int32_t> bias(n);
  for (auto& x : bias) x = static_cast<std::int32_t>(rng() % 20001) - 10000;
  std::int32_t mult;
  int shift;
  quantize_multiplier(1.0 / 1500.0, mult, shift);
  const packed_weights packed = be.pack_weights(b.data(), n, k);
  for (bool relu : {false, true}) {
    std::vector<std::int8_t> out(m * n);
    be.dense(a.data(), m, packed, n, k, bias.data(), requant_params{mult, shift, relu}, out.data());
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < n; ++j) {
        std::int64_t acc = 0;
        for (int p = 0; p < k; ++p) acc += static_cast<std::int64_t>(a[i * k + p]) * b[j * k + p];
        std::int8_t want = naive_requantize(static_cast<std::int32_t>(acc + bias[j]), mult, shift);
        if (relu && want < 0) want = 0;
        CHECK(out[i * n + j] == want);
      }
  }
}

TEST_CASE("argmax_rows picks the first index of the largest value in each row") {
  const std::int8_t x[] = {1, 5, 5, -3, /**/ -128, -128, -128, -128, /**/ 0, 0, 0, 127};
  std::int32_t out[3];
  argmax_rows(x, 3, 4, out);
  CHECK(out[0] == 1);
  CHECK(out[1] == 0);
  CHECK(out[2] == 3);
}

TEST_CASE("tensor helpers name dtypes, format shapes and bound sizes before allocation") {
  CHECK(dtype_name(dtype::i8) == "i8");
  CHECK(dtype_name(dtype::i32) == "i32");
  CHECK(parse_dtype("i32").value() == dtype::i32);
  CHECK_FALSE(parse_dtype("f16").ok());
  CHECK(dtype_size(dtype::i32) == 4);
  CHECK(shape_string({1, 784}) == "1x784");
  tensor t;
  t.shape = {2, 3, 4};
  CHECK(t.elements() == 24);
  CHECK(checked_bytes(dtype::i32, {2, 3}, 24).value() == 6);
  CHECK(checked_bytes(dtype::i32, {2, 3}, 23).err().code == errc::oversized);
  CHECK(checked_bytes(dtype::i8, {0, 3}, 100).err().code == errc::bad_input);
  CHECK(checked_bytes(dtype::i8, {-1}, 100).err().code == errc::bad_input);
  CHECK(checked_bytes(dtype::i8, {1ll << 40, 1ll << 40, 1ll << 40}, 1 << 20).err().code == errc::oversized);
}

TEST_CASE("a saved model loads back with the same bytes, layers and hash") {
  const model m = generate_mlp(11, {784, 32, 10}, "round-trip");
  const std::string bytes = save_model(m);
  auto loaded = load_model(bytes);
  REQUIRE(loaded.ok());
  CHECK(loaded->hash == verify::sha256_hex(bytes));
  CHECK(loaded->hash == m.hash);
  CHECK(loaded->name == "round-trip");
  REQUIRE(loaded->layers.size() == 2);
  for (std::size_t i = 0; i < 2; ++i) {
    CHECK(loaded->layers[i].weight == m.layers[i].weight);
    CHECK(loaded->layers[i].bias == m.layers[i].bias);
    CHECK(loaded->layers[i].kind == layer_kind::dense);
    CHECK(loaded->layers[i].in == m.layers[i].in);
    CHECK(loaded->layers[i].out == m.layers[i].out);
    CHECK(loaded->layers[i].rq.multiplier == m.layers[i].rq.multiplier);
    CHECK(loaded->layers[i].rq.shift == m.layers[i].rq.shift);
    CHECK(loaded->layers[i].rq.relu == m.layers[i].rq.relu);
    CHECK(loaded->layers[i].out_shape == m.layers[i].out_shape);
  }
  CHECK(save_model(*loaded) == bytes);
  CHECK(load_model(bytes, m.hash).ok());
}

TEST_CASE("load_model_file reads a file and reports a missing one as io_error") {
  const model m = small_model();
  const std::string path = "/tmp/haca-test-model-" + std::to_string(::getpid()) + ".safetensors";
  {
    FILE* f = std::fopen(path.c_str(), "wb");
    REQUIRE(f);
    const std::string bytes = save_model(m);
    std::fwrite(bytes.data(), 1, bytes.size(), f);
    std::fclose(f);
  }
  auto loaded = load_model_file(path);
  REQUIRE(loaded.ok());
  CHECK(loaded->hash == m.hash);
  std::remove(path.c_str());
  CHECK(load_model_file(path).err().code == errc::io_error);
}

TEST_CASE("generate_mlp is deterministic in its seed") {
  CHECK(save_model(generate_mlp(5, {784, 64, 10}, "a")) == save_model(generate_mlp(5, {784, 64, 10}, "a")));
  CHECK(generate_mlp(5, {784, 64, 10}, "a").hash == generate_mlp(5, {784, 64, 10}, "a").hash);
  CHECK(save_model(generate_mlp(5, {784, 64, 10}, "a")) != save_model(generate_mlp(6, {784, 64, 10}, "a")));
  const model m = generate_mlp(5, {784, 64, 10}, "a");
  CHECK(m.layers[0].rq.relu);
  CHECK_FALSE(m.layers[1].rq.relu);
  CHECK(m.input_shape == std::vector<std::int64_t>{784});
  CHECK(m.input_size() == 784);
  CHECK(m.output_size() == 10);
}

TEST_CASE("a generated model's outputs vary with the input and rarely saturate") {
  const model m = generate_mlp(2024, {784, 128, 10}, "varied");
  std::mt19937_64 rng(9);
  const tensor in = random_input(rng, 200, 784);
  auto r = run_model(m, in, reference_backend(), 256);
  REQUIRE(r.ok());
  std::set<std::int32_t> classes(r->classes.begin(), r->classes.end());
  CHECK(classes.size() >= 5);
  int saturated = 0, zero = 0;
  std::set<int> values;
  for (char c : r->output.data) {
    const int v = static_cast<std::int8_t>(c);
    saturated += (v == 127 || v == -128);
    zero += v == 0;
    values.insert(v);
  }
  const auto total = static_cast<int>(r->output.data.size());
  CHECK(saturated < total / 10);
  CHECK(zero < total / 4);
  CHECK(values.size() > 50);
}

TEST_CASE("the loader rejects each kind of corruption with bad_model and a reason naming it") {
  const model m = small_model();
  const std::string good = save_model(m);
  auto expect_bad = [](const std::string& bytes, const std::string& words, std::string_view hash = {}) {
    auto r = load_model(bytes, hash);
    REQUIRE_FALSE(r.ok());
    CHECK(r.err().code == errc::bad_model);
    CHECK_MESSAGE(r.err().reason.find(words) != std::string::npos, r.err().reason);
  };

  SUBCASE("a header length past the end") {
    std::string b = good;
    b[6] = 1;
    expect_bad(b, "bad header length");
    expect_bad(good.substr(0, 5), "bad header length");
  }
  SUBCASE("truncated tensor data") { expect_bad(good.substr(0, good.size() - 10), "out of range"); }
  SUBCASE("a header that is not JSON") {
    std::string b = good;
    b[8] = '!';
    expect_bad(b, "bad JSON");
  }
  SUBCASE("an unknown dtype") {
    auto f = split_file(good);
    f.header["layers.0.bias"]["dtype"] = "F16";
    expect_bad(join_file(f.header, f.data), "unknown dtype 'F16'");
  }
  SUBCASE("a shape that does not match its byte span") {
    auto f = split_file(good);
    f.header["layers.0.weight"]["shape"] = {8, 17};
    expect_bad(join_file(f.header, f.data), "needs 136");
  }
  SUBCASE("overlapping tensors") {
    auto f = split_file(good);
    f.header["layers.0.bias"]["data_offsets"] = {0, 32};
    expect_bad(join_file(f.header, f.data), "overlapping");
  }
  SUBCASE("a missing tensor") {
    auto f = split_file(good);
    f.header.erase("layers.1.requant");
    expect_bad(join_file(f.header, f.data), "missing tensor 'layers.1.requant'");
  }
  SUBCASE("an unexpected tensor") {
    auto f = split_file(good);
    f.header["layers.2.weight"] = {{"dtype", "I8"}, {"shape", {0}}, {"data_offsets", {0, 0}}};
    expect_bad(join_file(f.header, f.data), "unexpected tensor");
  }
  SUBCASE("the wrong format tag") {
    auto f = split_file(good);
    f.header["__metadata__"]["format"] = "haca-int8-v0";
    expect_bad(join_file(f.header, f.data), "format");
  }
  SUBCASE("layer dims that do not chain") {
    model bad_m = m;
    bad_m.layers[1].in = 9;
    bad_m.layers[1].weight.resize(4 * 9);
    expect_bad(save_model(bad_m), "do not chain");
  }
  SUBCASE("a multiplier out of range") {
    model bad_m = m;
    bad_m.layers[0].rq.multiplier = (1 << 30) - 1;
    expect_bad(save_model(bad_m), "multiplier");
    bad_m.layers[0].rq.multiplier = -5;
    expect_bad(save_model(bad_m), "multiplier");
  }
  SUBCASE("a shift out of range") {
    model bad_m = m;
    bad_m.layers[1].rq.shift = 32;
    expect_bad(save_model(bad_m), "shift 32");
    bad_m.layers[1].rq.shift = -1;
    expect_bad(save_model(bad_m), "shift -1");
  }
  SUBCASE("a hash mismatch") {
    expect_bad(good, "hash mismatch", std::string(64, '0'));
    CHECK(load_model(good, m.hash).ok());
  }
}

// Flips or truncates random bytes of a valid model file 2000 times: the loader answers ok or
// bad_model, never crashes, and whatever loads also runs.
static void fuzz_loader(const std::string& good, std::uint64_t seed) {
  std::uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<unsigned char>(good[i]);
  std::mt19937_64 rng(seed);
  int ok = 0, rejected = 0;
  for (int iter = 0; iter < 2000; ++iter) {
    std::string b = good;
    const int kind = static_cast<int>(rng() % 4);
    if (kind != 3) {
      const int flips = 1 + static_cast<int>(rng() % 4);
      for (int f = 0; f < flips; ++f) {
        // Mostly inside the prefix and header, where structure lives.
        const std::size_t pos = (rng() % 4 != 0) ? rng() % (8 + header_len) : rng() % b.size();
        b[pos] = static_cast<char>(b[pos] ^ static_cast<char>(1 + rng() % 255));
      }
    }
    if (kind >= 2) b.resize(rng() % (b.size() + 1));
    auto r = load_model(b);
    if (r.ok()) {
      ++ok;
      std::mt19937_64 in_rng(1);
      auto out = run_model(*r, random_input(in_rng, 2, r->input_size()), reference_backend());
      CHECK_MESSAGE(out.ok(), out.err().reason);
    } else {
      ++rejected;
      CHECK(r.err().code == errc::bad_model);
    }
  }
  CHECK(ok + rejected == 2000);
  CHECK(rejected > 1000);
}

TEST_CASE("flipping or truncating random bytes of a model file never crashes the loader") {
  fuzz_loader(save_model(small_model()), 77);
}

TEST_CASE("run_model rejects an input with the wrong dtype, shape or row count") {
  const model m = generate_mlp(1, {784, 16, 10}, "m");
  const auto& be = reference_backend();
  std::mt19937_64 rng(5);
  auto expect_bad = [&](const tensor& t, const std::string& got) {
    auto r = run_model(m, t, be, 4);
    REQUIRE_FALSE(r.ok());
    CHECK(r.err().code == errc::bad_input);
    CHECK_MESSAGE(r.err().reason.rfind("expected i8 [rows, 784]", 0) == 0, r.err().reason);
    CHECK_MESSAGE(r.err().reason.find("got " + got) != std::string::npos, r.err().reason);
  };
  tensor t = random_input(rng, 1, 784);
  t.type = dtype::i32;
  expect_bad(t, "i32 [1x784]");
  expect_bad(random_input(rng, 1, 783), "i8 [1x783]");
  tensor flat = random_input(rng, 1, 784);
  flat.shape = {784};
  expect_bad(flat, "i8 [784]");
  expect_bad(random_input(rng, 5, 784), "i8 [5x784]");
  tensor empty;
  empty.shape = {0, 784};
  expect_bad(empty, "i8 [0x784]");
  tensor short_data = random_input(rng, 2, 784);
  short_data.data.pop_back();
  auto r = run_model(m, short_data, be, 4);
  REQUIRE_FALSE(r.ok());
  CHECK(r.err().code == errc::bad_input);
  CHECK(run_model(m, random_input(rng, 4, 784), be, 4).ok());
}

TEST_CASE("the trace root is the Merkle root of the layer hashes and moves when one weight changes") {
  model m = generate_mlp(3, {784, 64, 32, 10}, "trace");
  std::mt19937_64 rng(8);
  const tensor in = random_input(rng, 3, 784);
  auto r = run_model(m, in, reference_backend());
  REQUIRE(r.ok());
  REQUIRE(r->layer_hashes.size() == 3);
  CHECK(r->trace_root == verify::merkle_root(r->layer_hashes));
  CHECK(r->output_hash == verify::sha256_hex(r->output.data));
  CHECK(r->layer_hashes.back() == verify::blake3_hex(r->output.data));
  CHECK(r->output.type == dtype::i8);
  CHECK(r->output.shape == std::vector<std::int64_t>{3, 10});
  CHECK(r->classes.size() == 3);

  auto again = run_model(m, in, reference_backend());
  REQUIRE(again.ok());
  CHECK(again->trace_root == r->trace_root);

  m.layers[0].weight[0] = static_cast<std::int8_t>(m.layers[0].weight[0] > 0 ? -127 : 127);
  auto changed = run_model(m, in, reference_backend());
  REQUIRE(changed.ok());
  CHECK(changed->layer_hashes[0] != r->layer_hashes[0]);
  CHECK(changed->trace_root != r->trace_root);
}

// ---- conv2d, maxpool, CNN models, backends ----

namespace {

std::vector<std::int8_t> random_i8(std::mt19937_64& rng, std::size_t n) {
  std::vector<std::int8_t> v(n);
  for (auto& x : v) x = static_cast<std::int8_t>(static_cast<int>(rng() % 256) - 128);
  return v;
}

// Requant params that keep a k-product sum of uniform int8 values mostly inside int8.
requant_params spread_rq(int k, bool relu) {
  requant_params rq;
  rq.relu = relu;
  quantize_multiplier(40.0 / (std::sqrt(static_cast<double>(k)) * 128.0 * 128.0 / 3.0), rq.multiplier, rq.shift);
  return rq;
}

// The plain meaning of conv2d: int64 sums over the window, zero outside the image.
std::vector<std::int8_t> naive_conv2d(const std::vector<std::int8_t>& in, int batch, const std::vector<std::int8_t>& w,
                                      const std::vector<std::int32_t>& bias, const conv2d_shape& s, requant_params rq) {
  const int oh = s.out_h(), ow = s.out_w();
  std::vector<std::int8_t> out(static_cast<std::size_t>(batch) * s.out_c * oh * ow);
  for (int b = 0; b < batch; ++b)
    for (int oc = 0; oc < s.out_c; ++oc)
      for (int y = 0; y < oh; ++y)
        for (int x = 0; x < ow; ++x) {
          std::int64_t sum = bias[oc];
          for (int ic = 0; ic < s.in_c; ++ic)
            for (int ky = 0; ky < s.kernel_h; ++ky)
              for (int kx = 0; kx < s.kernel_w; ++kx) {
                const std::int64_t iy = static_cast<std::int64_t>(y) * s.stride + ky - s.pad;
                const std::int64_t ix = static_cast<std::int64_t>(x) * s.stride + kx - s.pad;
                if (iy < 0 || ix < 0 || iy >= s.in_h || ix >= s.in_w) continue;
                sum += static_cast<std::int64_t>(in[((b * s.in_c + ic) * s.in_h + iy) * s.in_w + ix]) *
                       w[((oc * s.in_c + ic) * s.kernel_h + ky) * s.kernel_w + kx];
              }
          REQUIRE(sum >= std::numeric_limits<std::int32_t>::min());
          REQUIRE(sum <= std::numeric_limits<std::int32_t>::max());
          std::int8_t v = naive_requantize(static_cast<std::int32_t>(sum), rq.multiplier, rq.shift);
          if (rq.relu && v < 0) v = 0;
          out[((b * s.out_c + oc) * oh + y) * ow + x] = v;
        }
  return out;
}

std::vector<std::int8_t> naive_maxpool(const std::vector<std::int8_t>& in, int batch, const maxpool_shape& s) {
  const int oh = s.out_h(), ow = s.out_w();
  std::vector<std::int8_t> out(static_cast<std::size_t>(batch) * s.channels * oh * ow);
  for (int b = 0; b < batch; ++b)
    for (int c = 0; c < s.channels; ++c)
      for (int y = 0; y < oh; ++y)
        for (int x = 0; x < ow; ++x) {
          int best = -1000;
          for (int ky = 0; ky < s.kernel; ++ky)
            for (int kx = 0; kx < s.kernel; ++kx)
              best = std::max<int>(best, in[((b * s.channels + c) * s.in_h + y * s.stride + ky) * s.in_w + x * s.stride + kx]);
          out[((b * s.channels + c) * oh + y) * ow + x] = static_cast<std::int8_t>(best);
        }
  return out;
}

layer conv_layer(std::mt19937_64& rng, int in_c, int out_c, int kernel, int stride, int pad, bool relu) {
  layer L;
  L.kind = layer_kind::conv2d;
  L.conv.out_c = out_c;
  L.conv.kernel_h = L.conv.kernel_w = kernel;
  L.conv.stride = stride;
  L.conv.pad = pad;
  L.weight = random_i8(rng, static_cast<std::size_t>(out_c) * in_c * kernel * kernel);
  for (int i = 0; i < out_c; ++i) L.bias.push_back(static_cast<std::int32_t>(rng() % 20001) - 10000);
  L.rq = spread_rq(in_c * kernel * kernel, relu);
  return L;
}

layer dense_layer(std::mt19937_64& rng, int in, int out, bool relu) {
  layer L;
  L.kind = layer_kind::dense;
  L.in = in;
  L.out = out;
  L.weight = random_i8(rng, static_cast<std::size_t>(in) * out);
  for (int i = 0; i < out; ++i) L.bias.push_back(static_cast<std::int32_t>(rng() % 20001) - 10000);
  L.rq = spread_rq(in, relu);
  return L;
}

layer pool_layer(int kernel, int stride) {
  layer L;
  L.kind = layer_kind::maxpool;
  L.pool.kernel = kernel;
  L.pool.stride = stride;
  return L;
}

layer flatten_layer() {
  layer L;
  L.kind = layer_kind::flatten;
  return L;
}

// 1x12x12 -> conv 4 (3x3, pad 1) -> 4x12x12 -> maxpool 2 -> 4x6x6 -> conv 6 (3x3, stride 2, pad 1)
// -> 6x3x3 -> flatten 54 -> dense 10.
model small_cnn(std::uint64_t seed = 1) {
  std::mt19937_64 rng(seed);
  model m;
  m.name = "small-cnn";
  m.metadata["float_accuracy"] = "0.875";
  m.metadata["train_command"] = "haca train cnn --epochs 1";
  m.input_shape = {1, 12, 12};
  m.layers.push_back(conv_layer(rng, 1, 4, 3, 1, 1, true));
  m.layers.push_back(pool_layer(2, 2));
  m.layers.push_back(conv_layer(rng, 4, 6, 3, 2, 1, true));
  m.layers.push_back(flatten_layer());
  m.layers.push_back(dense_layer(rng, 54, 10, false));
  REQUIRE(complete_shapes(m).ok());
  m.hash = verify::sha256_hex(save_model(m));
  return m;
}

} // namespace

TEST_CASE("reference conv2d equals a naive int64 loop for strides, paddings, 1x1 and odd shapes") {
  struct conv_case {
    int batch, in_c, in_h, in_w, out_c, kh, kw, stride, pad;
  };
  const std::vector<conv_case> cases = {
      {1, 1, 5, 5, 1, 3, 3, 1, 0},   {2, 3, 7, 9, 4, 3, 3, 2, 1},   {3, 2, 6, 6, 3, 1, 1, 1, 0},
      {1, 2, 6, 5, 3, 1, 1, 2, 1},   {2, 5, 11, 7, 2, 3, 5, 2, 1},  {1, 1, 28, 28, 8, 5, 5, 1, 2},
      {1, 4, 4, 4, 2, 4, 4, 1, 0},   {2, 3, 9, 9, 5, 3, 3, 3, 0},   {1, 7, 1, 1, 3, 1, 1, 1, 0},
      {2, 3, 13, 10, 4, 3, 3, 2, 0}, {1, 16, 8, 8, 16, 3, 3, 1, 1}, {1, 2, 3, 3, 2, 3, 3, 2, 1},
  };
  std::mt19937_64 rng(11);
  const auto& be = reference_backend();
  for (const auto& c : cases) {
    conv2d_shape s;
    s.in_c = c.in_c;
    s.in_h = c.in_h;
    s.in_w = c.in_w;
    s.out_c = c.out_c;
    s.kernel_h = c.kh;
    s.kernel_w = c.kw;
    s.stride = c.stride;
    s.pad = c.pad;
    const int k = c.in_c * c.kh * c.kw;
    const auto in = random_i8(rng, static_cast<std::size_t>(c.batch) * c.in_c * c.in_h * c.in_w);
    const auto w = random_i8(rng, static_cast<std::size_t>(c.out_c) * k);
    std::vector<std::int32_t> bias(static_cast<std::size_t>(c.out_c));
    for (auto& b : bias) b = static_cast<std::int32_t>(rng() % 2001) - 1000;
    for (bool relu : {false, true}) {
      const requant_params rq = spread_rq(k, relu);
      const std::size_t out_n = static_cast<std::size_t>(c.batch) * c.out_c * s.out_h() * s.out_w();
      std::vector<std::int8_t> got(out_n, 99);
      be.conv2d(in.data(), c.batch, be.pack_weights(w.data(), c.out_c, k), bias.data(), s, rq, got.data());
      const auto want = naive_conv2d(in, c.batch, w, bias, s, rq);
      CHECK_MESSAGE(got == want, "batch " << c.batch << " in " << c.in_c << "x" << c.in_h << "x" << c.in_w << " out_c "
                                          << c.out_c << " kernel " << c.kh << "x" << c.kw << " stride " << c.stride
                                          << " pad " << c.pad << " relu " << relu);
    }
  }
}

TEST_CASE("a 1x1 stride-1 conv2d without padding is a dense layer over channels at each pixel") {
  std::mt19937_64 rng(12);
  const auto& be = reference_backend();
  conv2d_shape s;
  s.in_c = 5;
  s.in_h = 3;
  s.in_w = 4;
  s.out_c = 6;
  s.kernel_h = s.kernel_w = 1;
  const auto in = random_i8(rng, 5 * 3 * 4);
  const auto w = random_i8(rng, 6 * 5);
  std::vector<std::int32_t> bias = {1, -2, 3, -4, 5, -6};
  const requant_params rq = spread_rq(5, false);
  std::vector<std::int8_t> conv(6 * 3 * 4);
  be.conv2d(in.data(), 1, be.pack_weights(w.data(), 6, 5), bias.data(), s, rq, conv.data());
  // NCHW -> one row of channels per pixel, then dense.
  std::vector<std::int8_t> rows(12 * 5), dense(12 * 6);
  for (int p = 0; p < 12; ++p)
    for (int c = 0; c < 5; ++c) rows[p * 5 + c] = in[c * 12 + p];
  be.dense(rows.data(), 12, be.pack_weights(w.data(), 6, 5), 6, 5, bias.data(), rq, dense.data());
  for (int p = 0; p < 12; ++p)
    for (int oc = 0; oc < 6; ++oc) CHECK(conv[oc * 12 + p] == dense[p * 6 + oc]);
}

TEST_CASE("reference maxpool equals a naive loop, overlapping and odd-sized windows included") {
  struct pool_case {
    int batch, channels, h, w, kernel, stride;
  };
  const std::vector<pool_case> cases = {{1, 1, 4, 4, 2, 2}, {2, 3, 7, 7, 2, 2}, {1, 2, 9, 5, 3, 2}, {2, 4, 6, 6, 3, 3},
                                        {1, 1, 5, 5, 1, 1}, {3, 2, 8, 8, 2, 1}, {1, 3, 3, 3, 3, 1}, {1, 1, 1, 1, 1, 1}};
  std::mt19937_64 rng(13);
  for (const auto& c : cases) {
    maxpool_shape s;
    s.channels = c.channels;
    s.in_h = c.h;
    s.in_w = c.w;
    s.kernel = c.kernel;
    s.stride = c.stride;
    const auto in = random_i8(rng, static_cast<std::size_t>(c.batch) * c.channels * c.h * c.w);
    std::vector<std::int8_t> got(static_cast<std::size_t>(c.batch) * c.channels * s.out_h() * s.out_w(), 99);
    reference_backend().maxpool(in.data(), c.batch, s, got.data());
    CHECK_MESSAGE(got == naive_maxpool(in, c.batch, s), "batch " << c.batch << " " << c.channels << "x" << c.h << "x"
                                                                 << c.w << " kernel " << c.kernel << " stride " << c.stride);
  }
  // All -128: the max is -128, not some initial value.
  std::vector<std::int8_t> low(16, -128), out(4, 0);
  maxpool_shape s;
  s.channels = 1;
  s.in_h = s.in_w = 4;
  reference_backend().maxpool(low.data(), 1, s, out.data());
  CHECK(out == std::vector<std::int8_t>(4, -128));
}

TEST_CASE("quantize_pixels maps 0 to 0 and 255 to 127, monotonically, as (p * 127 + 127) / 255") {
  std::vector<std::uint8_t> pixels(256);
  for (int i = 0; i < 256; ++i) pixels[i] = static_cast<std::uint8_t>(i);
  std::vector<std::int8_t> q(256);
  quantize_pixels(pixels.data(), pixels.size(), q.data());
  CHECK(q[0] == 0);
  CHECK(q[255] == 127);
  for (int i = 1; i < 256; ++i) {
    CHECK(q[i] >= q[i - 1]);
    CHECK(q[i] == (i * 127 + 127) / 255);
  }
  std::set<int> distinct(q.begin(), q.end());
  CHECK(distinct.size() == 128); // every value 0..127 is reached
}

TEST_CASE("a CNN model completes its shapes, round-trips through save and load, and runs") {
  const model m = small_cnn();
  REQUIRE(m.layers.size() == 5);
  CHECK(m.layers[0].out_shape == std::vector<std::int64_t>{4, 12, 12});
  CHECK(m.layers[0].conv.in_c == 1);
  CHECK(m.layers[0].conv.in_h == 12);
  CHECK(m.layers[1].out_shape == std::vector<std::int64_t>{4, 6, 6});
  CHECK(m.layers[1].pool.channels == 4);
  CHECK(m.layers[2].out_shape == std::vector<std::int64_t>{6, 3, 3});
  CHECK(m.layers[3].out_shape == std::vector<std::int64_t>{54});
  CHECK(m.layers[4].in == 54);
  CHECK(m.input_size() == 144);
  CHECK(m.output_size() == 10);

  const std::string bytes = save_model(m);
  auto loaded = load_model(bytes, m.hash);
  REQUIRE_MESSAGE(loaded.ok(), loaded.err().reason);
  CHECK(save_model(*loaded) == bytes);
  CHECK(loaded->name == "small-cnn");
  CHECK(loaded->metadata == m.metadata);
  CHECK(loaded->input_shape == m.input_shape);
  REQUIRE(loaded->layers.size() == m.layers.size());
  for (std::size_t i = 0; i < m.layers.size(); ++i) {
    const auto& a = loaded->layers[i];
    const auto& b = m.layers[i];
    CHECK(a.kind == b.kind);
    CHECK(a.weight == b.weight);
    CHECK(a.bias == b.bias);
    CHECK(a.rq.multiplier == b.rq.multiplier);
    CHECK(a.rq.shift == b.rq.shift);
    CHECK(a.rq.relu == b.rq.relu);
    CHECK(a.out_shape == b.out_shape);
    CHECK(a.conv.stride == b.conv.stride);
    CHECK(a.conv.pad == b.conv.pad);
    CHECK(a.pool.kernel == b.pool.kernel);
  }

  std::mt19937_64 rng(21);
  const tensor in = random_input(rng, 7, 144);
  const prepared_model pm = prepare(*loaded, reference_backend());
  auto r = run_model(pm, in);
  REQUIRE_MESSAGE(r.ok(), r.err().reason);
  CHECK(r->output.shape == std::vector<std::int64_t>{7, 10});
  CHECK(r->classes.size() == 7);
  // Trace layers: conv+maxpool, conv+flatten, dense.
  REQUIRE(r->layer_hashes.size() == 3);
  CHECK(r->layer_hashes[2] == verify::blake3_hex(r->output.data));
  CHECK(r->trace_root == verify::merkle_root(r->layer_hashes));
  auto again = run_model(m, in, reference_backend());
  REQUIRE(again.ok());
  CHECK(again->output.data == r->output.data);
  CHECK(again->trace_root == r->trace_root);

  // The first trace layer's hash is the hash of conv2d then maxpool's bytes for all rows.
  std::vector<std::int8_t> conv0(7 * 4 * 12 * 12), pool0(7 * 4 * 6 * 6);
  const auto& be = reference_backend();
  be.conv2d(in.i8(), 7, be.pack_weights(m.layers[0].weight.data(), 4, 9), m.layers[0].bias.data(), m.layers[0].conv,
            m.layers[0].rq, conv0.data());
  be.maxpool(conv0.data(), 7, m.layers[1].pool, pool0.data());
  CHECK(r->layer_hashes[0] == verify::blake3_hex(std::string_view(reinterpret_cast<const char*>(pool0.data()), pool0.size())));

  // Rows are independent: running them one at a time gives the same output rows.
  for (int row = 0; row < 7; ++row) {
    tensor one;
    one.shape = {1, 144};
    one.data = in.data.substr(static_cast<std::size_t>(row) * 144, 144);
    auto single = run_model(pm, one);
    REQUIRE(single.ok());
    CHECK(single->output.data == r->output.data.substr(static_cast<std::size_t>(row) * 10, 10));
    CHECK(single->classes[0] == r->classes[static_cast<std::size_t>(row)]);
  }

  // Outputs vary: the model is not degenerate.
  std::set<int> values(r->output.data.begin(), r->output.data.end());
  CHECK(values.size() > 10);
}

TEST_CASE("complete_shapes rejects layers whose shapes do not chain") {
  auto expect_bad = [](model m, const std::string& words) {
    auto st = complete_shapes(m);
    REQUIRE_FALSE(st.ok());
    CHECK(st.err().code == errc::bad_model);
    CHECK_MESSAGE(st.err().reason.find(words) != std::string::npos, st.err().reason);
  };
  std::mt19937_64 rng(5);
  const model good = small_cnn();

  SUBCASE("dense straight after conv2d, without flatten") {
    model m = good;
    m.layers.erase(m.layers.begin() + 3);
    expect_bad(m, "flatten");
  }
  SUBCASE("conv2d on a flat input") {
    model m;
    m.input_shape = {144};
    m.layers.push_back(conv_layer(rng, 1, 2, 3, 1, 1, true));
    expect_bad(m, "CxHxW");
  }
  SUBCASE("a conv2d whose in_c is not the previous layer's channels") {
    model m = good;
    m.layers[2] = conv_layer(rng, 5, 6, 3, 2, 1, true);
    m.layers[2].conv.in_c = 5;
    expect_bad(m, "do not chain");
    m.layers[2].conv.in_c = 0; // then the weight count gives it away
    expect_bad(m, "weights");
  }
  SUBCASE("a dense layer whose in is not the previous layer's size") {
    model m = good;
    m.layers[4] = dense_layer(rng, 55, 10, false);
    expect_bad(m, "takes 55 inputs but layer 3 gives 54");
  }
  SUBCASE("a maxpool window larger than its input") {
    model m = good;
    m.layers[1] = pool_layer(13, 2);
    expect_bad(m, "window");
  }
  SUBCASE("a conv2d kernel larger than its padded input") {
    model m;
    m.input_shape = {1, 4, 4};
    m.layers.push_back(conv_layer(rng, 1, 2, 7, 1, 1, false));
    expect_bad(m, "kernel");
  }
  SUBCASE("a bias of the wrong length") {
    model m = good;
    m.layers[0].bias.pop_back();
    expect_bad(m, "biases");
  }
  SUBCASE("weights on a layer that has none") {
    model m = good;
    m.layers[3].weight = {1, 2, 3};
    expect_bad(m, "has no weights");
  }
  SUBCASE("more products per output than int32 accumulation allows") {
    model m;
    m.input_shape = {16384, 3, 3};
    m.layers.push_back(conv_layer(rng, 16384, 1, 3, 1, 0, false)); // k = 147456
    expect_bad(m, "131071");
  }
  SUBCASE("no layers, or a bad input shape") {
    model m = good;
    m.layers.clear();
    expect_bad(m, "no layers");
    m = good;
    m.input_shape = {};
    expect_bad(m, "input_shape");
    m.input_shape = {1, 12, 0};
    expect_bad(m, "input_shape");
  }
  SUBCASE("a zero stride") {
    model m = good;
    m.layers[0].conv.stride = 0;
    expect_bad(m, "stride");
  }
}

TEST_CASE("the loader rejects malformed CNN layer descriptions with bad_model and a reason") {
  const std::string good = save_model(small_cnn());
  auto expect_bad = [](const std::string& bytes, const std::string& words) {
    auto r = load_model(bytes);
    REQUIRE_FALSE(r.ok());
    CHECK(r.err().code == errc::bad_model);
    CHECK_MESSAGE(r.err().reason.find(words) != std::string::npos, r.err().reason);
  };
  auto with_layers = [&](const std::function<void(nlohmann::json&)>& edit) {
    auto f = split_file(good);
    auto specs = nlohmann::json::parse(f.header["__metadata__"]["layers"].get<std::string>());
    edit(specs);
    f.header["__metadata__"]["layers"] = specs.dump();
    return join_file(f.header, f.data);
  };
  expect_bad(with_layers([](auto& s) { s[1]["kind"] = "avgpool"; }), "unknown kind 'avgpool'");
  expect_bad(with_layers([](auto& s) { s[0]["dilation"] = 2; }), "unknown key 'dilation'");
  expect_bad(with_layers([](auto& s) { s[0]["stride"] = 0; }), "\"stride\"");
  expect_bad(with_layers([](auto& s) { s[0]["pad"] = -1; }), "\"pad\"");
  expect_bad(with_layers([](auto& s) { s[0]["relu"] = 1; }), "relu");
  expect_bad(with_layers([](auto& s) { s[0]["kernel"] = 5; }), "layers.0.weight");
  expect_bad(with_layers([](auto& s) { s.erase(3); }), "missing tensor 'layers.3.weight'"); // tensors stay at 4
  expect_bad(with_layers([](auto& s) { s[3]["kind"] = "dense"; }), "needs \"out\"");
  {
    auto f = split_file(good);
    f.header["__metadata__"]["input_shape"] = "[1,12]";
    expect_bad(join_file(f.header, f.data), "CxHxW");
    f.header["__metadata__"]["input_shape"] = "[1,12,";
    expect_bad(join_file(f.header, f.data), "input_shape");
    f.header["__metadata__"]["input_shape"] = "[1,12,70000]";
    expect_bad(join_file(f.header, f.data), "input_shape");
    f.header["__metadata__"].erase("input_shape");
    expect_bad(join_file(f.header, f.data), "input_shape");
  }
  {
    auto f = split_file(good);
    f.header["__metadata__"]["float_accuracy"] = 0.9;
    expect_bad(join_file(f.header, f.data), "must be a string");
  }
  {
    auto f = split_file(good);
    f.header["layers.1.weight"] = {{"dtype", "I8"}, {"shape", {0}}, {"data_offsets", {0, 0}}};
    expect_bad(join_file(f.header, f.data), "unexpected tensor 'layers.1.weight'");
  }
}

TEST_CASE("flipping or truncating random bytes of a CNN model file never crashes the loader") {
  fuzz_loader(save_model(small_cnn()), 78);
}

TEST_CASE("the backend registry lists the reference last, always usable, and finds backends by name") {
  const auto compiled = compiled_backends();
  REQUIRE_FALSE(compiled.empty());
  CHECK(compiled.back() == &reference_backend());
  const auto usable = usable_backends();
  REQUIRE_FALSE(usable.empty());
  CHECK(usable.back() == &reference_backend());
  std::set<std::string> names;
  for (const backend* be : compiled) {
    CHECK(names.insert(be->name).second);
    const bool is_usable = std::find(usable.begin(), usable.end(), be) != usable.end();
    CHECK(is_usable == be->unavailable_reason().empty());
    CHECK(find_backend(be->name) == (is_usable ? be : nullptr));
  }
  CHECK(names.count("cpu") == 1);
  CHECK(find_backend("reference") == &reference_backend());
  CHECK(find_backend("no-such-backend") == nullptr);
}

TEST_CASE("every usable backend runs an MLP and a CNN to the reference's bytes and layer hashes") {
  const model mlp = generate_mlp(4, {784, 96, 33, 10}, "mlp");
  const model cnn = small_cnn(9);
  std::mt19937_64 rng(31);
  for (const model* m : {&mlp, &cnn}) {
    for (int rows : {1, 5, 64}) {
      const tensor in = random_input(rng, rows, m->input_size());
      auto want = run_model(*m, in, reference_backend());
      REQUIRE(want.ok());
      for (const backend* be : usable_backends()) {
        auto got = run_model(prepare(*m, *be), in);
        REQUIRE_MESSAGE(got.ok(), be->name << ": " << got.err().reason);
        CHECK_MESSAGE(got->layer_hashes == want->layer_hashes, be->name << " on " << m->name << " rows " << rows);
        CHECK_MESSAGE(got->output.data == want->output.data, be->name << " on " << m->name << " rows " << rows);
      }
    }
  }
}

TEST_CASE("a corruption (the cheat and lie test switch) changes one layer's output and every hash after it, consistently") {
  const model m = generate_mlp(77, {32, 16, 8, 4}, "cheat"); // three dense trace layers
  std::mt19937_64 rng(3);
  const tensor in = random_input(rng, 2, 32);
  const auto pm = prepare(m, reference_backend());
  auto honest = run_model(pm, in, 256);
  REQUIRE(honest.ok());
  REQUIRE(honest->layer_hashes.size() == 3);
  for (std::size_t layer = 0; layer < 3; ++layer) {
    CAPTURE(layer);
    auto cheated = run_model(pm, in, 256, corruption{layer, 5, 3});
    REQUIRE(cheated.ok());
    for (std::size_t i = 0; i < layer; ++i)
      CHECK(cheated->layer_hashes[i] == honest->layer_hashes[i]); // agreed before the corrupted layer
    CHECK(cheated->layer_hashes[layer] != honest->layer_hashes[layer]);
    CHECK(cheated->trace_root != honest->trace_root);
    // Consistent: the hashes are those of the values the cheat actually produced.
    auto again = run_model(pm, in, 256, corruption{layer, 5, 3});
    CHECK(again->trace_root == cheated->trace_root);
    CHECK(cheated->output_hash == verify::sha256_hex(cheated->output.data));
  }
  CHECK(run_model(pm, in, 256, std::nullopt)->trace_root == honest->trace_root);
}
