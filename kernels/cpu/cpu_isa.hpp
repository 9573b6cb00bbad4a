#pragma once
// The CPU backend's instruction-set selection and its int32-output GEMM on packed weights
// (for benchmarks and tests). Every ISA path gives the same bytes as the reference backend.
#include <cstdint>
#include <functional>

#include "kernels/ops.hpp"

namespace haca::kernels {

enum class cpu_isa { scalar = 0, avx2 = 1, avx512vnni = 2 };

// The best ISA this CPU supports (cpuid via __builtin_cpu_supports).
cpu_isa cpu_detected_isa();
// The ISA the cpu backend uses now: the detected one, or HACA_CPU_ISA=scalar|avx2|avx512 from
// the environment at first use (clamped to what the CPU supports), or what cpu_force_isa set.
cpu_isa cpu_current_isa();
const char* cpu_isa_name(cpu_isa isa); // "scalar", "avx2", "avx512vnni"
const char* cpu_backend_isa();         // cpu_isa_name(cpu_current_isa())
// Testing hook: returns false (and changes nothing) when this CPU cannot run `isa`. Packed
// weights share one layout across ISAs, so weights packed before a switch stay valid.
bool cpu_force_isa(cpu_isa isa);
// Threads the backend splits large ops across (hardware_concurrency, or HACA_CPU_THREADS).
int cpu_threads();
// Calls f(0) and f(1): on two of the backend's threads when it has them and they are free,
// else one after the other on the caller. For other host work, such as hashing a layer.
void cpu_run_pair(const std::function<void(int)>& f);

// c[m][n] = sum_k a[m][k] * b[n][k] with b packed by cpu_backend().pack_weights(b, n, k).
void cpu_gemm_packed_s32(const std::int8_t* a, int m, const packed_weights& b, int n, int k, std::int32_t* c);

} // namespace haca::kernels
