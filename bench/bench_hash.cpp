// BLAKE3 on each ISA path vs SHA-256 (OpenSSL, the baseline hash of layer outputs), one thread,
// same process, same in-cache input:
//   cmake --build build-b3 -j2 --target bench_hash && build-b3/bench_hash
// GB/s = input bytes / seconds per call, best of short batches over about 0.2 s per cell, timed
// with the thread's CPU clock (this machine is shared). The ratio is blake3 / sha256.
#include <time.h>

#include <cstdint>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "verify/blake3.hpp"
#include "verify/hash.hpp"

using namespace haca::verify;

namespace {

double thread_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

volatile std::uint8_t g_sink; // keeps the hashes from being optimized away

// Bytes per second of hash(input): batches of about 5 ms for about 0.2 s, the fastest batch.
double bytes_per_second(const std::function<digest(std::string_view)>& hash, std::string_view input) {
  g_sink = hash(input)[0]; // warm up
  long reps = 1;
  for (;;) { // grow the batch until it takes 5 ms
    const double t0 = thread_cpu_seconds();
    for (long i = 0; i < reps; ++i) g_sink = hash(input)[0];
    if (thread_cpu_seconds() - t0 >= 0.005) break;
    reps *= 2;
  }
  double best = 1e30;
  for (const double start = thread_cpu_seconds(); thread_cpu_seconds() - start < 0.2;) {
    const double t0 = thread_cpu_seconds();
    for (long i = 0; i < reps; ++i) g_sink = hash(input)[0];
    best = std::min(best, (thread_cpu_seconds() - t0) / static_cast<double>(reps));
  }
  return static_cast<double>(input.size()) / best;
}

} // namespace

int main() {
  const std::vector<std::size_t> sizes = {256, 1024, 4096, 16384, 65536, 800 * 1024};
  std::string data(sizes.back(), '\0');
  std::mt19937 rng(7);
  for (char& c : data) c = static_cast<char>(rng());

  const blake3_isa saved = blake3_current_isa();
  std::vector<blake3_isa> isas;
  for (const blake3_isa isa : {blake3_isa::portable, blake3_isa::avx2, blake3_isa::avx512}) {
    if (blake3_force_isa(isa))
      isas.push_back(isa);
    else
      std::printf("blake3 %s: skipped, this CPU lacks it\n", blake3_isa_name(isa));
  }
  blake3_force_isa(saved);
  std::printf("blake3 default path here: %s\n\n", blake3_isa_name(saved));

  std::printf("%-8s %16s", "size", "sha256");
  for (const blake3_isa isa : isas) std::printf(" %26s", (std::string("blake3 ") + blake3_isa_name(isa)).c_str());
  std::printf("\n");
  for (const std::size_t size : sizes) {
    const std::string_view input(data.data(), size);
    const double sha = bytes_per_second(sha256, input);
    const std::string label = size < 1024 ? std::to_string(size) + " B" : std::to_string(size / 1024) + " KB";
    std::printf("%-8s %11.2f GB/s", label.c_str(), sha / 1e9);
    const digest expected = blake3(input);
    for (const blake3_isa isa : isas) {
      blake3_force_isa(isa);
      if (blake3(input) != expected)
        std::printf("\nerror: blake3 %s gives another digest at %zu bytes\n", blake3_isa_name(isa), size);
      const double b3 = bytes_per_second(blake3, input);
      std::printf(" %11.2f GB/s (%5.2fx sha256)", b3 / 1e9, b3 / sha);
    }
    blake3_force_isa(saved);
    std::printf("\n");
  }
  return 0;
}
