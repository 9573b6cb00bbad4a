// The property verification rests on: every backend produces the same bytes, layer by layer,
// so a verifier on one backend reproduces a provider's trace root from another.
#include <doctest/doctest.h>

#include <random>

#include "kernels/model.hpp"

using namespace haca::kernels;

namespace {

tensor random_rows(int rows, int cols, std::uint64_t seed) {
  std::mt19937_64 rng{seed};
  tensor t{dtype::i8, {rows, cols}, std::string(static_cast<std::size_t>(rows * cols), '\0')};
  for (auto& c : t.data)
    c = static_cast<char>(static_cast<int>(rng() % 256) - 128);
  return t;
}

// A small CNN built in code: conv -> pool -> conv(stride 2) -> flatten -> dense.
model small_cnn(std::uint64_t seed) {
  std::mt19937_64 rng{seed};
  auto weights = [&](std::size_t n) {
    std::vector<std::int8_t> w(n);
    for (auto& x : w)
      x = static_cast<std::int8_t>(static_cast<int>(rng() % 61) - 30);
    return w;
  };
  auto biases = [&](std::size_t n) {
    std::vector<std::int32_t> b(n);
    for (auto& x : b)
      x = static_cast<std::int32_t>(rng() % 2001) - 1000;
    return b;
  };
  model m;
  m.name = "trace-cnn";
  m.input_shape = {1, 12, 12};
  layer c1;
  c1.kind = layer_kind::conv2d;
  c1.conv.out_c = 4;
  c1.conv.kernel_h = c1.conv.kernel_w = 3;
  c1.conv.pad = 1;
  c1.weight = weights(4 * 1 * 9);
  c1.bias = biases(4);
  c1.rq = {1 << 30, 6, true};
  layer p1;
  p1.kind = layer_kind::maxpool;
  p1.pool.kernel = 2;
  p1.pool.stride = 2;
  layer c2;
  c2.kind = layer_kind::conv2d;
  c2.conv.out_c = 6;
  c2.conv.kernel_h = c2.conv.kernel_w = 3;
  c2.conv.stride = 2;
  c2.weight = weights(6 * 4 * 9);
  c2.bias = biases(6);
  c2.rq = {1518500250, 7, true};
  layer f;
  f.kind = layer_kind::flatten;
  layer d;
  d.kind = layer_kind::dense;
  d.out = 10;
  d.weight = weights(10 * 6 * 2 * 2);
  d.bias = biases(10);
  d.rq = {1 << 30, 5, false};
  m.layers = {c1, p1, c2, f, d};
  REQUIRE(complete_shapes(m).ok());
  return m;
}

void check_same_trace_everywhere(const model& m, const tensor& input) {
  auto ref = run_model(m, input, reference_backend());
  REQUIRE(ref.ok());
  for (const auto* be : usable_backends()) {
    CAPTURE(be->name);
    auto got = run_model(m, input, *be);
    REQUIRE(got.ok());
    CHECK(got->layer_hashes == ref->layer_hashes);
    CHECK(got->trace_root == ref->trace_root);
    CHECK(got->output_hash == ref->output_hash);
    CHECK(got->classes == ref->classes);
  }
  for (const auto* be : compiled_backends())
    if (auto why = be->unavailable_reason(); !why.empty())
      MESSAGE("backend ", std::string(be->name), " not checked here: ", why);
}

} // namespace

TEST_CASE("every usable backend gives an MLP the same layer hashes and trace root as the reference") {
  auto m = generate_mlp(3, {784, 128, 10}, "trace-mlp");
  for (int rows : {1, 7, 64})
    check_same_trace_everywhere(m, random_rows(rows, m.input_size(), 100 + rows));
}

TEST_CASE("every usable backend gives a CNN the same layer hashes and trace root as the reference") {
  auto m = small_cnn(5);
  for (int rows : {1, 3, 32})
    check_same_trace_everywhere(m, random_rows(rows, m.input_size(), 200 + rows));
}

TEST_CASE("a trace root changes when one layer's output changes") {
  auto m = small_cnn(6);
  auto input = random_rows(2, m.input_size(), 7);
  auto before = run_model(m, input, reference_backend());
  m.layers[2].bias[0] += 100000; // moves conv 2's output, and everything after it
  auto after = run_model(m, input, reference_backend());
  REQUIRE(before.ok());
  REQUIRE(after.ok());
  // Trace layers: conv 1 + maxpool, conv 2 + flatten, dense.
  REQUIRE(before->layer_hashes.size() == 3);
  CHECK(before->layer_hashes[0] == after->layer_hashes[0]);
  CHECK(before->layer_hashes[1] != after->layer_hashes[1]);
  CHECK(before->trace_root != after->trace_root);
}
