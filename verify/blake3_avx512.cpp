// BLAKE3 AVX-512 path: 16 inputs per pass in zmm lanes, rotates with vprord (_mm512_ror_epi32).
// Compiled for AVX-512 F + VL by the target pragma below (no global -m flags); only called when
// cpuid reports both. Standard headers come before the pragma so that no inline library code is
// compiled for AVX-512.
// GCC 12 warns about _mm512_undefined_epi32() inside its own intrinsics headers (a false
// positive of -Wmaybe-uninitialized once they are inlined); nothing here reads undefined data.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "verify/blake3_internal.hpp"

#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl")

#include "verify/blake3_lanes.hpp"

namespace haca::verify::blake3_detail {
namespace {

struct zmm_ops {
  using V = __m512i;
  static constexpr std::size_t lanes = 16;
  static V add(V a, V b) { return _mm512_add_epi32(a, b); }
  static V xor_(V a, V b) { return _mm512_xor_si512(a, b); }
  template <int n> static V ror(V a) { return _mm512_ror_epi32(a, n); }
  static V set1(std::uint32_t x) { return _mm512_set1_epi32(static_cast<int>(x)); }
  static V loadu(const void* p) { return _mm512_loadu_si512(p); }
  static void storeu(void* p, V v) { _mm512_storeu_si512(p, v); }

  [[gnu::always_inline]] static void transpose(V r[16]) { transpose_16x16(r); }
};

// AVX-512 VL gives vprord on ymm and xmm too: the narrower passes for leftover inputs.
struct ymm_ops : ymm_base {
  template <int n> static V ror(V a) { return _mm256_ror_epi32(a, n); }
};

struct xmm_ops : xmm_base {
  template <int n> static V ror(V a) { return _mm_ror_epi32(a, n); }
};

} // namespace

void hash_many_avx512(const std::uint8_t* input, std::size_t count, std::size_t blocks, std::uint64_t counter,
                      bool increment, std::uint32_t flags, std::uint32_t flag_start, std::uint32_t flag_end,
                      std::uint8_t* out) {
  hash_many_lanes<zmm_ops, ymm_ops, xmm_ops>(input, count, blocks, counter, increment, flags, flag_start, flag_end,
                                             out);
}

} // namespace haca::verify::blake3_detail

#pragma GCC pop_options
