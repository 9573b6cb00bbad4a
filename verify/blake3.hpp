#pragma once
// BLAKE3 (default hash mode, 32-byte output), written from the BLAKE3 specification. Hashes the
// per-layer outputs of inference: several times faster than SHA-256 on large inputs, because the
// 1 KiB chunks of one input are compressed side by side in SIMD lanes (AVX-512 or AVX2, chosen
// at run time from cpuid; a portable path runs everywhere and gives the same bytes).
#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

#include "verify/hash.hpp"

namespace haca::verify {

digest blake3(std::string_view data);
std::string blake3_hex(std::string_view data); // 64 lowercase hex chars

// The same hash with the root's two subtrees hashed side by side: run_both(f) must call f(0)
// and f(1), on two threads or one after the other. Inputs under two_way_min_bytes are hashed
// on the caller alone (waking a thread costs more than the split saves).
inline constexpr std::size_t two_way_min_bytes = 32 * 1024;
digest blake3_two_way(std::string_view data, const std::function<void(const std::function<void(int)>&)>& run_both);

enum class blake3_isa { portable, avx2, avx512 };

// The path blake3() uses now: the best the CPU supports (avx512 needs avx512f + avx512vl), or
// what blake3_force_isa set.
blake3_isa blake3_current_isa();
// Testing and benchmark hook: returns false (and changes nothing) when this CPU cannot run `isa`.
bool blake3_force_isa(blake3_isa isa);
const char* blake3_isa_name(blake3_isa isa); // "portable", "avx2", "avx512"

} // namespace haca::verify
