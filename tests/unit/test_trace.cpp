// The property verification rests on: every backend produces the same bytes, layer by layer,
// so a verifier on one backend reproduces a provider's trace root from another.
#include <doctest/doctest.h>

#include <map>
#include <memory>
#include <random>

#include "core/referee.hpp"
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

TEST_CASE("the referee's one-layer re-run gives the full run's hash of that layer, and exposes a corrupted one") {
  for (const auto& m : {small_cnn(8), generate_mlp(4, {784, 64, 32, 10}, "referee-mlp")}) {
    CAPTURE(m.name);
    const auto input = random_rows(3, m.input_size(), 11);
    const auto pm = prepare(m, reference_backend());
    const auto full = run_model(pm, input).value();
    const auto n = trace_layer_count(m);
    REQUIRE(n == full.layer_hashes.size());
    for (std::size_t t = 0; t < n; ++t) {
      CAPTURE(t);
      const auto entering = t == 0 ? input : trace_layer_output(pm, input, t - 1).value();
      CHECK(layer_hash(entering.data) == (t == 0 ? layer_hash(input.data) : full.layer_hashes[t - 1]));
      const auto check = run_trace_layer(pm, t, entering).value();
      CHECK(check.layer_hash == full.layer_hashes[t]);
      CHECK(check.output_hash == (t + 1 == n ? full.output_hash : std::string()));
    }
    // A cheater's corrupted layer: its hash is not what the referee computes from the agreed
    // activation before it.
    int exposed = 0;
    for (std::size_t layer = 0; layer < m.layers.size(); ++layer) {
      CAPTURE(layer);
      const auto cheat = run_model(pm, input, 256, corruption{layer, 5, 3}).value();
      if (cheat.layer_hashes == full.layer_hashes)
        continue; // absorbed (a maxpool kept another value): nothing to dispute
      ++exposed;
      std::size_t first = 0;
      while (first < n && cheat.layer_hashes[first] == full.layer_hashes[first])
        ++first;
      REQUIRE(first < n);
      const auto entering = first == 0 ? input : trace_layer_output(pm, input, first - 1).value();
      CHECK(run_trace_layer(pm, first, entering).value().layer_hash != cheat.layer_hashes[first]);
    }
    CHECK(exposed >= 2);
  }
  // Wrong activations are refused with a reason, never run.
  const auto m = small_cnn(9);
  const auto pm = prepare(m, reference_backend());
  auto bad = random_rows(2, 5, 1);
  auto e = run_trace_layer(pm, 1, bad);
  REQUIRE_FALSE(e.ok());
  CHECK(e.err().code == haca::errc::bad_input);
  CHECK_FALSE(run_trace_layer(pm, 99, bad).ok());
  CHECK_FALSE(trace_layer_output(pm, random_rows(1, m.input_size(), 2), 99).ok());
}

TEST_CASE("the coordinator's referee re-runs one layer, the layers up to it, or the whole job, as asked") {
  auto models = std::make_shared<std::map<std::string, model>>();
  const auto m = generate_mlp(5, {784, 32, 16, 10}, "referee-core");
  models->emplace(m.hash, m);
  const haca::core::referee referee{models};
  const auto input = random_rows(2, m.input_size(), 21);
  const auto full = run_model(m, input, reference_backend()).value();
  const auto pm = prepare(m, reference_backend());
  using mode = haca::core::referee_task::mode;
  auto run = [&](mode how, std::int32_t layer, const tensor& entering) {
    return referee.run({7, m.hash, how, layer, entering, {}});
  };
  auto whole = run(mode::whole_job, -1, input);
  REQUIRE(whole.result);
  CHECK(whole.job_id == 7);
  CHECK(whole.result->trace_root == full.trace_root);
  CHECK(whole.result->output_hash == full.output_hash);
  auto one = run(mode::one_layer, 1, trace_layer_output(pm, input, 0).value());
  REQUIRE(one.result);
  CHECK(one.result->layer_hash == full.layer_hashes[1]);
  CHECK(one.result->output_hash.empty());
  auto from_input = run(mode::from_input, 2, input);
  REQUIRE(from_input.result);
  CHECK(from_input.result->layer_hash == full.layer_hashes[2]);
  CHECK(from_input.result->output_hash == full.output_hash); // the last layer
  auto unknown = referee.run({7, std::string(64, 'a'), mode::whole_job, -1, input, {}});
  CHECK_FALSE(unknown.result);
  CHECK(unknown.problem.find("not loaded") != std::string::npos);
  CHECK_FALSE(run(mode::one_layer, 1, input).result); // the input is not layer 1's activation: refused
  // ... unless the job's input comes with it: then the referee computes the activation itself.
  auto recovered = referee.run({7, m.hash, mode::one_layer, 1, input, input});
  REQUIRE(recovered.result);
  CHECK(recovered.result->layer_hash == full.layer_hashes[1]);
}
