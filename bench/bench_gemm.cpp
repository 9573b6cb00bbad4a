// haca cpu int8 GEMM vs oneDNN's int8 matmul (u8 x s8 -> s32) on the same shapes, same process.
//   build/bench_gemm    from the repository root (it reads the layer shapes of models/*.safetensors)
//   HACA_CPU_THREADS=1 OMP_NUM_THREADS=1 build/bench_gemm   (1 thread each, CPU-time clock: steadier)
//   HACA_CPU_ISA=avx2|scalar selects haca's path; an argument runs only the shapes whose name
//   contains it (e.g. build/bench_gemm 'conv 16->32').
// haca: weights packed once (as at model load), activations int8, int32 out (cpu_gemm_packed_s32);
// its time includes its per-call activation packing. oneDNN: weights reordered once to the
// layout it picks (format_tag::any), activations already u8 (= a + 128), int32 out.
// Also prints the int8 peak of this CPU, measured with a register-only vpdpbusd loop on every
// thread at once, and the clock measured with a dependent-add chain.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <dnnl.hpp>

#include "kernels/cpu/backend_cpu.hpp"
#include "kernels/cpu/cpu_isa.hpp"
#include "kernels/model.hpp"
#include "kernels/ops.hpp"

using namespace haca::kernels;
using clk = std::chrono::steady_clock;

namespace {

double seconds_since(clk::time_point t0) { return std::chrono::duration<double>(clk::now() - t0).count(); }

double thread_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// With one thread for haca and for oneDNN, time with the calling thread's CPU time: immune to
// other processes taking the cores (this machine is shared), unlike wall-clock time.
bool g_cpu_clock = false;
double now_s() {
  return g_cpu_clock ? thread_cpu_seconds()
                     : std::chrono::duration<double>(clk::now().time_since_epoch()).count();
}

// Seconds per call of fn, best of many short batches (the minimum is the figure least disturbed
// by other processes on a shared machine).
struct timer {
  std::function<void()> fn;
  int reps = 1;
  double best = 1e30;
  void calibrate() {
    fn(); // warm up
    const double t0 = now_s();
    fn();
    reps = std::max(1, static_cast<int>(0.002 / std::max(now_s() - t0, 1e-7)));
  }
  void sample() {
    const double t0 = now_s();
    for (int r = 0; r < reps; ++r) fn();
    best = std::min(best, (now_s() - t0) / reps);
  }
};

// Interleaves the two so that both see the same background load; ~budget seconds in all.
void time_pair(timer& x, timer& y, double budget = 0.4) {
  x.calibrate();
  y.calibrate();
  const auto start = clk::now();
  for (int round = 0; round < 3 || (seconds_since(start) < budget && round < 100); ++round) {
    x.sample();
    y.sample();
  }
}

double measure_ghz_once() {
  const long iters = 5'000'000;
  std::uint64_t x = 0;
  const double t0 = thread_cpu_seconds();
  for (long i = 0; i < iters; ++i)
    asm volatile("add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\t"
                 "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0"
                 : "+r"(x));
  return static_cast<double>(iters) * 8 / (thread_cpu_seconds() - t0) / 1e9;
}

double measure_ghz() { // best of 20 short runs
  double best = 0;
  for (int i = 0; i < 20; ++i) best = std::max(best, measure_ghz_once());
  return best;
}

// Register-only loops in inline asm: compiled C++ kept the accumulator array in memory, which
// measured store-forwarding latency instead of the multiply-add units.
double vnni_loop(long iters) {
  for (long i = 0; i < iters; ++i)
    asm volatile(
        "vpdpbusd %%zmm30, %%zmm31, %%zmm0\n\tvpdpbusd %%zmm30, %%zmm31, %%zmm1\n\t"
        "vpdpbusd %%zmm30, %%zmm31, %%zmm2\n\tvpdpbusd %%zmm30, %%zmm31, %%zmm3\n\t"
        "vpdpbusd %%zmm30, %%zmm31, %%zmm4\n\tvpdpbusd %%zmm30, %%zmm31, %%zmm5\n\t"
        "vpdpbusd %%zmm30, %%zmm31, %%zmm6\n\tvpdpbusd %%zmm30, %%zmm31, %%zmm7\n\t"
        "vpdpbusd %%zmm30, %%zmm31, %%zmm8\n\tvpdpbusd %%zmm30, %%zmm31, %%zmm9\n\t"
        "vpdpbusd %%zmm30, %%zmm31, %%zmm10\n\tvpdpbusd %%zmm30, %%zmm31, %%zmm11\n\t"
        "vpdpbusd %%zmm30, %%zmm31, %%zmm12\n\tvpdpbusd %%zmm30, %%zmm31, %%zmm13\n\t"
        "vpdpbusd %%zmm30, %%zmm31, %%zmm14\n\tvpdpbusd %%zmm30, %%zmm31, %%zmm15\n\t" ::
            : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11",
              "xmm12", "xmm13", "xmm14", "xmm15");
  return static_cast<double>(iters) * 16 * 64 * 2;
}

double avx2_loop(long iters) {
  for (long i = 0; i < iters; ++i)
    asm volatile(
        "vpmaddwd %%ymm14, %%ymm15, %%ymm12\n\tvpaddd %%ymm12, %%ymm0, %%ymm0\n\t"
        "vpmaddwd %%ymm14, %%ymm15, %%ymm13\n\tvpaddd %%ymm13, %%ymm1, %%ymm1\n\t"
        "vpmaddwd %%ymm14, %%ymm15, %%ymm12\n\tvpaddd %%ymm12, %%ymm2, %%ymm2\n\t"
        "vpmaddwd %%ymm14, %%ymm15, %%ymm13\n\tvpaddd %%ymm13, %%ymm3, %%ymm3\n\t"
        "vpmaddwd %%ymm14, %%ymm15, %%ymm12\n\tvpaddd %%ymm12, %%ymm4, %%ymm4\n\t"
        "vpmaddwd %%ymm14, %%ymm15, %%ymm13\n\tvpaddd %%ymm13, %%ymm5, %%ymm5\n\t"
        "vpmaddwd %%ymm14, %%ymm15, %%ymm12\n\tvpaddd %%ymm12, %%ymm6, %%ymm6\n\t"
        "vpmaddwd %%ymm14, %%ymm15, %%ymm13\n\tvpaddd %%ymm13, %%ymm7, %%ymm7\n\t" ::
            : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm12", "xmm13");
  return static_cast<double>(iters) * 8 * 16 * 2;
}

double measure_peak_once(double (*loop)(long), int threads) {
  const long iters = 2'000'000;
  std::vector<double> rate(static_cast<std::size_t>(threads));
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&, t] {
      const double t0 = thread_cpu_seconds();
      const double ops = loop(iters);
      rate[static_cast<std::size_t>(t)] = ops / (thread_cpu_seconds() - t0);
    });
  for (auto& t : ts) t.join();
  double total = 0;
  for (double r : rate) total += r;
  return total;
}

double measure_peak(double (*loop)(long), int threads) { // best of 20 short runs
  double best = 0;
  for (int i = 0; i < 20; ++i) best = std::max(best, measure_peak_once(loop, threads));
  return best;
}

std::vector<std::int8_t> random_i8(std::mt19937_64& rng, std::size_t n) {
  std::vector<std::int8_t> v(n);
  for (auto& x : v) x = static_cast<std::int8_t>(rng());
  return v;
}

struct onednn_gemm {
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  dnnl::stream strm{eng};
  dnnl::matmul prim;
  dnnl::memory a_mem, b_mem, c_mem;

  // a_u8: m x k (= a + 128), b: n x k row-major (= k x n column-major), c: m x n int32.
  onednn_gemm(int m, int n, int k, std::uint8_t* a_u8, const std::int8_t* b, std::int32_t* c) {
    using dt = dnnl::memory::data_type;
    using tag = dnnl::memory::format_tag;
    const dnnl::memory::desc a_md({m, k}, dt::u8, tag::ab);
    const dnnl::memory::desc b_any({k, n}, dt::s8, tag::any);
    const dnnl::memory::desc c_md({m, n}, dt::s32, tag::ab);
    const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a_md, b_any, c_md), eng);
    prim = dnnl::matmul(pd);
    a_mem = dnnl::memory(a_md, eng, a_u8);
    c_mem = dnnl::memory(c_md, eng, c);
    dnnl::memory b_user({{k, n}, dt::s8, tag::ba}, eng, const_cast<std::int8_t*>(b));
    b_mem = dnnl::memory(pd.weights_desc(), eng);
    dnnl::reorder(b_user, b_mem).execute(strm, b_user, b_mem);
    strm.wait();
  }
  void run() {
    prim.execute(strm, {{DNNL_ARG_SRC, a_mem}, {DNNL_ARG_WEIGHTS, b_mem}, {DNNL_ARG_DST, c_mem}});
    strm.wait();
  }
};

struct shape {
  std::string name;
  int m, n, k;
};

// The GEMM of every dense and conv2d layer of the committed models (models/*.safetensors, read
// from the working directory), per sample: dense is 1 x out x in; conv2d is
// (out_h*out_w) x out_c x (in_c*kh*kw) after im2col. Same shapes once only.
std::vector<shape> model_gemm_shapes() {
  std::vector<shape> out;
  std::vector<std::filesystem::path> files;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("models", ec))
    if (e.path().extension() == ".safetensors") files.push_back(e.path());
  std::sort(files.begin(), files.end());
  if (files.empty()) {
    std::fprintf(stderr, "bench_gemm: no models/*.safetensors here; run it from the repository root\n");
    std::exit(2);
  }
  for (const auto& f : files) {
    auto r = load_model_file(f.string());
    if (!r) {
      std::fprintf(stderr, "bench_gemm: %s: %s\n", f.string().c_str(), r.err().reason.c_str());
      std::exit(2);
    }
    const std::string model_name = f.stem().string();
    for (const layer& L : r->layers) {
      shape s;
      if (L.kind == layer_kind::dense) {
        s = {model_name + " dense " + std::to_string(L.in) + "->" + std::to_string(L.out), 1, L.out, L.in};
      } else if (L.kind == layer_kind::conv2d) {
        const conv2d_shape& c = L.conv;
        s = {model_name + " conv " + std::to_string(c.in_c) + "->" + std::to_string(c.out_c), c.out_h() * c.out_w(),
             c.out_c, c.in_c * c.kernel_h * c.kernel_w};
      } else {
        continue;
      }
      const bool seen = std::any_of(out.begin(), out.end(),
                                    [&](const shape& o) { return o.m == s.m && o.n == s.n && o.k == s.k; });
      if (!seen) out.push_back(s);
    }
  }
  return out;
}

} // namespace

int main(int argc, char** argv) {
  const std::string only = argc > 1 ? argv[1] : ""; // run only shapes whose name contains this
  const int threads = cpu_threads();
  const cpu_isa isa = cpu_current_isa();
  const char* omp = std::getenv("OMP_NUM_THREADS");
  g_cpu_clock = threads == 1 && omp != nullptr && std::string(omp) == "1";
  const double ghz = measure_ghz();
  double peak = 0;
  const char* peak_how = "";
  if (isa == cpu_isa::avx512vnni) {
    peak = measure_peak(&vnni_loop, threads);
    peak_how = "vpdpbusd zmm, 16 independent chains";
  } else if (isa == cpu_isa::avx2) {
    peak = measure_peak(&avx2_loop, threads);
    peak_how = "vpmaddwd+vpaddd ymm, 8 chains";
  }
  std::printf("haca cpu backend: ISA %s, %d threads; oneDNN %d.%d.%d\n", cpu_backend_isa(), threads,
              dnnl_version()->major, dnnl_version()->minor, dnnl_version()->patch);
  std::printf("clock (dependent-add chain, 1 thread): %.2f GHz\n", ghz);
  if (peak > 0)
    std::printf("int8 peak measured (%s, %d threads at once): %.0f GOPS = %.0f ops/cycle/core at %.2f GHz\n", peak_how,
                threads, peak / 1e9, peak / threads / (ghz * 1e9), ghz);
  std::printf("GOPS = 2*m*n*k / best time per call (haca and oneDNN interleaved, best of many ~2 ms batches)\n");
  std::printf("clock: %s\n\n", g_cpu_clock ? "CPU time of the calling thread (1 thread each: HACA_CPU_THREADS=1 OMP_NUM_THREADS=1)"
                                         : "wall clock (disturbed by other processes on a shared machine)");

  std::vector<shape> shapes;
  for (int s : {256, 512, 1024, 2048}) shapes.push_back({"square " + std::to_string(s), s, s, s});
  const std::vector<shape> per_sample = model_gemm_shapes();
  for (int b : {1, 16, 64, 256})
    for (const shape& s : per_sample) shapes.push_back({s.name + " b" + std::to_string(b), s.m * b, s.n, s.k});

  std::mt19937_64 rng(1);
  std::printf("%-32s %6s %5s %5s %10s %10s %7s %7s\n", "shape", "m", "n", "k", "haca", "oneDNN", "ratio",
              "%peak");
  std::printf("%-32s %6s %5s %5s %10s %10s %7s %7s\n", "", "", "", "", "GOPS", "GOPS", "h/o", "haca");
  bool checked = false, all_equal = true;
  for (const shape& s : shapes) {
    if (s.name.find(only) == std::string::npos) continue;
    const auto a = random_i8(rng, static_cast<std::size_t>(s.m) * s.k);
    const auto b = random_i8(rng, static_cast<std::size_t>(s.n) * s.k);
    std::vector<std::uint8_t> a_u8(a.size());
    for (std::size_t i = 0; i < a.size(); ++i) a_u8[i] = static_cast<std::uint8_t>(a[i] + 128);
    std::vector<std::int32_t> c_haca(static_cast<std::size_t>(s.m) * s.n), c_dnnl(c_haca.size());
    const packed_weights w = cpu_backend().pack_weights(b.data(), s.n, s.k);
    onednn_gemm dn(s.m, s.n, s.k, a_u8.data(), b.data(), c_dnnl.data());
    const double ops = 2.0 * s.m * s.n * s.k;
    timer th{[&] { cpu_gemm_packed_s32(a.data(), s.m, w, s.n, s.k, c_haca.data()); }};
    timer td{[&] { dn.run(); }};
    time_pair(th, td);
    const double t_haca = th.best, t_dnnl = td.best;
    const double g_haca = ops / t_haca / 1e9, g_dnnl = ops / t_dnnl / 1e9;
    std::printf("%-32s %6d %5d %5d %10.1f %10.1f %7.2f %6.1f%%\n", s.name.c_str(), s.m, s.n, s.k, g_haca, g_dnnl,
                g_haca / g_dnnl, peak > 0 ? 100.0 * g_haca * 1e9 / peak : 0.0);
    // Equality with oneDNN: oneDNN computed sum (a+128)*b; subtract 128 * colsum(b).
    if (!checked || s.m * static_cast<double>(s.n) * s.k <= 1e9) {
      bool eq = true;
      for (int j = 0; j < s.n && eq; ++j) {
        std::int64_t colsum = 0;
        for (int p = 0; p < s.k; ++p) colsum += b[static_cast<std::size_t>(j) * s.k + p];
        for (int i = 0; i < s.m; ++i) {
          const std::size_t idx = static_cast<std::size_t>(i) * s.n + j;
          if (static_cast<std::int64_t>(c_dnnl[idx]) - 128 * colsum != c_haca[idx]) {
            eq = false;
            break;
          }
        }
      }
      if (!eq) {
        std::printf("  MISMATCH: haca int32 != oneDNN int32 - 128*colsum on %s\n", s.name.c_str());
        all_equal = false;
      }
      checked = true;
    }
  }
  std::printf("\nint32 results: haca == oneDNN (u8 input a+128, minus 128*colsum(b)) on every shape up to 1e9 MACs: %s\n",
              all_equal ? "yes" : "NO");
  return all_equal ? 0 : 1;
}
