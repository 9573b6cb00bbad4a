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

  // 16x16 words: interleave words, then pairs of words, within each 128-bit lane; then move
  // whole 128-bit lanes so that lane g of vector w comes from rows 4g..4g+3.
  [[gnu::always_inline]] static void transpose(V r[16]) {
    V t[16];
#pragma GCC unroll 16
    for (int i = 0; i < 16; i += 2) {
      t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
      t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    }
    // u[4 g + j]: 128-bit lane k holds word 4 k + j of rows 4 g .. 4 g + 3.
    V u[16];
#pragma GCC unroll 16
    for (int g = 0; g < 4; ++g) {
      u[4 * g + 0] = _mm512_unpacklo_epi64(t[4 * g], t[4 * g + 2]);
      u[4 * g + 1] = _mm512_unpackhi_epi64(t[4 * g], t[4 * g + 2]);
      u[4 * g + 2] = _mm512_unpacklo_epi64(t[4 * g + 1], t[4 * g + 3]);
      u[4 * g + 3] = _mm512_unpackhi_epi64(t[4 * g + 1], t[4 * g + 3]);
    }
#pragma GCC unroll 16
    for (int j = 0; j < 4; ++j) {
      const V a = u[j], b = u[4 + j], c = u[8 + j], d = u[12 + j];
      const V ab01 = _mm512_shuffle_i32x4(a, b, 0x44); // a0 a1 b0 b1
      const V ab23 = _mm512_shuffle_i32x4(a, b, 0xEE); // a2 a3 b2 b3
      const V cd01 = _mm512_shuffle_i32x4(c, d, 0x44);
      const V cd23 = _mm512_shuffle_i32x4(c, d, 0xEE);
      r[j] = _mm512_shuffle_i32x4(ab01, cd01, 0x88);      // a0 b0 c0 d0
      r[4 + j] = _mm512_shuffle_i32x4(ab01, cd01, 0xDD);  // a1 b1 c1 d1
      r[8 + j] = _mm512_shuffle_i32x4(ab23, cd23, 0x88);  // a2 b2 c2 d2
      r[12 + j] = _mm512_shuffle_i32x4(ab23, cd23, 0xDD); // a3 b3 c3 d3
    }
  }
};

// AVX-512 VL gives vprord on ymm and xmm too: the narrower passes for leftover inputs.
struct ymm_ops {
  using V = __m256i;
  static constexpr std::size_t lanes = 8;
  static V add(V a, V b) { return _mm256_add_epi32(a, b); }
  static V xor_(V a, V b) { return _mm256_xor_si256(a, b); }
  template <int n> static V ror(V a) { return _mm256_ror_epi32(a, n); }
  static V set1(std::uint32_t x) { return _mm256_set1_epi32(static_cast<int>(x)); }
  static V loadu(const void* p) { return _mm256_loadu_si256(static_cast<const V*>(p)); }
  static void storeu(void* p, V v) { _mm256_storeu_si256(static_cast<V*>(p), v); }

  [[gnu::always_inline]] static void transpose(V r[8]) { transpose_8x8(r); }
};

struct xmm_ops {
  using V = __m128i;
  static constexpr std::size_t lanes = 4;
  static V add(V a, V b) { return _mm_add_epi32(a, b); }
  static V xor_(V a, V b) { return _mm_xor_si128(a, b); }
  template <int n> static V ror(V a) { return _mm_ror_epi32(a, n); }
  static V set1(std::uint32_t x) { return _mm_set1_epi32(static_cast<int>(x)); }
  static V loadu(const void* p) { return _mm_loadu_si128(static_cast<const V*>(p)); }
  static void storeu(void* p, V v) { _mm_storeu_si128(static_cast<V*>(p), v); }

  [[gnu::always_inline]] static void transpose(V r[4]) { transpose_4x4(r); }
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
