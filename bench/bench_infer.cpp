// Images per second per model and batch size, reference vs cpu backend, and the share of
// run_model's time spent hashing (BLAKE3 trace layer hashes, the trace root, SHA-256 output hash)
// at batch 64.
//   build-cpu/bench_infer                              (2 threads, wall clock)
//   HACA_CPU_THREADS=1 build-cpu/bench_infer           (1 thread, the calling thread's CPU time)
// Models: generate_mlp(1, {784, 128, 10}); a synthetic CNN with random weights in the shape of
// the Fashion-MNIST CNN (conv 1->16 3x3 pad 1 relu, maxpool 2, conv 16->32 3x3 pad 1 relu,
// maxpool 2, flatten, dense 1568->10); and every models/*.safetensors that loads.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/backend_cpu.hpp"
#include "kernels/cpu/cpu_isa.hpp"
#include "kernels/model.hpp"
#include "kernels/ops.hpp"

using namespace haca::kernels;

namespace {

bool g_cpu_clock = false;

double now_s() {
  if (g_cpu_clock) {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Best seconds per call over short batches for ~budget seconds.
double best_time(const std::function<void()>& fn, double budget = 0.3) {
  fn();
  double t0 = now_s();
  fn();
  const int reps = std::max(1, static_cast<int>(0.003 / std::max(now_s() - t0, 1e-7)));
  double best = 1e30;
  const double start = now_s();
  for (int round = 0; round < 3 || (now_s() - start < budget && round < 200); ++round) {
    t0 = now_s();
    for (int r = 0; r < reps; ++r) fn();
    best = std::min(best, (now_s() - t0) / reps);
  }
  return best;
}

model synthetic_cnn() {
  std::mt19937_64 rng(2026);
  model m;
  m.name = "synthetic-cnn";
  m.input_shape = {1, 28, 28};
  auto conv = [&](int in_c, int out_c) {
    layer L;
    L.kind = layer_kind::conv2d;
    L.conv.in_c = in_c;
    L.conv.out_c = out_c;
    L.conv.kernel_h = L.conv.kernel_w = 3;
    L.conv.stride = 1;
    L.conv.pad = 1;
    L.weight.resize(static_cast<std::size_t>(out_c) * in_c * 9);
    for (auto& w : L.weight) w = static_cast<std::int8_t>(static_cast<int>(rng() % 255) - 127);
    L.bias.assign(static_cast<std::size_t>(out_c), 0);
    L.rq = {std::int32_t{1} << 30, 9, true};
    return L;
  };
  auto pool = [] {
    layer L;
    L.kind = layer_kind::maxpool;
    L.pool.kernel = 2;
    L.pool.stride = 2;
    return L;
  };
  m.layers.push_back(conv(1, 16));
  m.layers.push_back(pool());
  m.layers.push_back(conv(16, 32));
  m.layers.push_back(pool());
  layer flat;
  flat.kind = layer_kind::flatten;
  m.layers.push_back(flat);
  layer d;
  d.kind = layer_kind::dense;
  d.in = 32 * 7 * 7;
  d.out = 10;
  d.weight.resize(static_cast<std::size_t>(d.in) * d.out);
  for (auto& w : d.weight) w = static_cast<std::int8_t>(static_cast<int>(rng() % 255) - 127);
  d.bias.assign(10, 0);
  d.rq = {std::int32_t{1} << 30, 10, false};
  m.layers.push_back(d);
  if (!complete_shapes(m)) {
    std::fprintf(stderr, "synthetic CNN: complete_shapes failed\n");
    std::exit(1);
  }
  return m;
}

tensor random_input(const model& m, int rows, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  tensor t;
  t.type = dtype::i8;
  t.shape = {rows, m.input_size()};
  t.data.resize(static_cast<std::size_t>(rows) * static_cast<std::size_t>(m.input_size()));
  for (auto& c : t.data) c = static_cast<char>(rng() % 128); // like quantized pixels: 0..127
  return t;
}

} // namespace

int main() {
  g_cpu_clock = cpu_threads() == 1;
  std::printf("cpu backend: ISA %s, %d threads; clock: %s\n\n", cpu_backend_isa(), cpu_threads(),
              g_cpu_clock ? "CPU time of the calling thread" : "wall clock (shared machine: noisy)");
  std::vector<model> models;
  models.push_back(generate_mlp(1, {784, 128, 10}, "mlp-784-128-10"));
  models.push_back(synthetic_cnn());
  std::error_code ec;
  if (std::filesystem::is_directory("models", ec)) {
    for (const auto& e : std::filesystem::directory_iterator("models", ec)) {
      if (e.path().extension() != ".safetensors") continue;
      auto r = load_model_file(e.path().string());
      if (!r) {
        std::printf("skipping %s: %s\n", e.path().string().c_str(), r.err().reason.c_str());
        continue;
      }
      models.push_back(std::move(*r));
      models.back().name = e.path().filename().string();
    }
  } else {
    std::printf("(no models/ directory here: run from the repository root to include models/*.safetensors)\n");
  }

  const backend& ref = reference_backend();
  const backend& cpu = cpu_backend();
  bool all_same = true;
  std::printf("%-28s %6s %14s %14s %8s\n", "model", "batch", "reference im/s", "cpu im/s", "cpu/ref");
  for (const model& m : models) {
    const prepared_model pr = prepare(m, ref), pc = prepare(m, cpu);
    for (int batch : {1, 16, 64, 256}) {
      const tensor in = random_input(m, batch, 77 + batch);
      auto rr = run_model(pr, in);
      auto rc = run_model(pc, in);
      if (!rr || !rc) {
        std::printf("%s batch %d: run_model failed\n", m.name.c_str(), batch);
        return 1;
      }
      const bool same = rr->trace_root == rc->trace_root && rr->output.data == rc->output.data;
      all_same = all_same && same;
      const double tr = best_time([&] { (void)run_model(pr, in); }, 0.2);
      const double tc = best_time([&] { (void)run_model(pc, in); }, 0.2);
      std::printf("%-28s %6d %14.0f %14.0f %8.2f%s\n", m.name.c_str(), batch, batch / tr, batch / tc, tr / tc,
                  same ? "" : "  TRACE ROOTS DIFFER");
    }
  }
  std::printf("\ntrace roots (Merkle root of the trace layers' BLAKE3 hashes) equal for reference and cpu on every run: %s\n\n",
              all_same ? "yes" : "NO");

  // Hashing share at batch 64: run_model's hashing (layer_hash of each trace layer's output, then
  // seal_trace), timed alone on buffers of the same sizes, over run_model's whole time.
  std::printf("%-28s %12s %12s %12s %8s\n", "hashing at batch 64", "hashed bytes", "hash us", "run_model us",
              "share");
  for (const model& m : models) {
    const int batch = 64;
    const prepared_model pc = prepare(m, cpu);
    const tensor in = random_input(m, batch, 5);
    std::vector<std::string> traced;
    std::size_t bytes = 0;
    for (std::size_t i = 0; i < m.layers.size(); ++i) {
      if (!ends_trace_layer(m, i)) continue;
      std::int64_t per = 1;
      for (auto d : m.layers[i].out_shape) per *= d;
      traced.emplace_back(static_cast<std::size_t>(per * batch), '\x11');
      bytes += traced.back().size();
    }
    const std::string& output = traced.back();
    bytes += output.size();
    inference sealed;
    sealed.output.data = output;
    const double th = best_time([&] {
      sealed.layer_hashes.clear();
      for (const auto& o : traced) sealed.layer_hashes.push_back(layer_hash(o));
      seal_trace(sealed);
    });
    const double tr = best_time([&] { (void)run_model(pc, in); });
    std::printf("%-28s %12zu %12.1f %12.1f %7.1f%%\n", m.name.c_str(), bytes, th * 1e6, tr * 1e6, 100.0 * th / tr);
  }
  return all_same ? 0 : 1;
}
