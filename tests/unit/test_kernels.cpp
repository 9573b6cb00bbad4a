#include <doctest/doctest.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <limits>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kernels/model.hpp"
#include "kernels/ops.hpp"
#include "kernels/tensor.hpp"
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

TEST_CASE("reference bias_requant adds the bias, requantizes and applies relu only when asked") {
  const auto& be = reference_backend();
  std::mt19937_64 rng(3);
  const int m = 5, n = 13;
  std::vector<std::int32_t> acc(m * n), bias(n);
  for (auto& x : acc) x = static_cast<std::int32_t>(rng() % 400001) - 200000;
  for (auto& x : bias) x = static_cast<std::int32_t>(rng() % 20001) - 10000;
  std::int32_t mult;
  int shift;
  quantize_multiplier(1.0 / 1500.0, mult, shift);
  for (bool relu : {false, true}) {
    std::vector<std::int8_t> out(m * n);
    be.bias_requant(acc.data(), bias.data(), out.data(), m, n, mult, shift, relu);
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < n; ++j) {
        std::int8_t want = naive_requantize(acc[i * n + j] + bias[j], mult, shift);
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
    CHECK(loaded->layers[i].multiplier == m.layers[i].multiplier);
    CHECK(loaded->layers[i].shift == m.layers[i].shift);
    CHECK(loaded->layers[i].relu == m.layers[i].relu);
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
  CHECK(m.layers[0].relu);
  CHECK_FALSE(m.layers[1].relu);
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
    bad_m.layers[0].multiplier = (1 << 30) - 1;
    expect_bad(save_model(bad_m), "multiplier");
    bad_m.layers[0].multiplier = -5;
    expect_bad(save_model(bad_m), "multiplier");
  }
  SUBCASE("a shift out of range") {
    model bad_m = m;
    bad_m.layers[1].shift = 32;
    expect_bad(save_model(bad_m), "shift 32");
    bad_m.layers[1].shift = -1;
    expect_bad(save_model(bad_m), "shift -1");
  }
  SUBCASE("a hash mismatch") {
    expect_bad(good, "hash mismatch", std::string(64, '0'));
    CHECK(load_model(good, m.hash).ok());
  }
}

TEST_CASE("flipping or truncating random bytes of a model file never crashes the loader") {
  const std::string good = save_model(small_model());
  std::uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<unsigned char>(good[i]);
  std::mt19937_64 rng(77);
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
    } else {
      ++rejected;
      CHECK(r.err().code == errc::bad_model);
    }
  }
  CHECK(ok + rejected == 2000);
  CHECK(rejected > 1000);
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
  CHECK(r->layer_hashes.back() == r->output_hash);
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
