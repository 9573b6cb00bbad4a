// BLAKE3 AVX2 path: 8 inputs per pass in ymm lanes. AVX2 has no rotate: rotates by 16 and 8
// bits are byte shuffles (vpshufb), by 12 and 7 a shift pair and an or.
// Compiled for AVX2 by the target pragma below (no global -m flags); only called when cpuid
// reports AVX2. Standard headers come before the pragma so that no inline library code is
// compiled for AVX2.
#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "verify/blake3_internal.hpp"

#pragma GCC push_options
#pragma GCC target("avx2")

#include "verify/blake3_lanes.hpp"

namespace haca::verify::blake3_detail {
namespace {

struct ymm_ops {
  using V = __m256i;
  static constexpr std::size_t lanes = 8;
  static V add(V a, V b) { return _mm256_add_epi32(a, b); }
  static V xor_(V a, V b) { return _mm256_xor_si256(a, b); }
  template <int n> static V ror(V a) {
    if constexpr (n == 16) {
      return _mm256_shuffle_epi8(a, _mm256_setr_epi8(2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13, //
                                                     2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13));
    } else if constexpr (n == 8) {
      return _mm256_shuffle_epi8(a, _mm256_setr_epi8(1, 2, 3, 0, 5, 6, 7, 4, 9, 10, 11, 8, 13, 14, 15, 12, //
                                                     1, 2, 3, 0, 5, 6, 7, 4, 9, 10, 11, 8, 13, 14, 15, 12));
    } else {
      return _mm256_or_si256(_mm256_srli_epi32(a, n), _mm256_slli_epi32(a, 32 - n));
    }
  }
  static V set1(std::uint32_t x) { return _mm256_set1_epi32(static_cast<int>(x)); }
  static V loadu(const void* p) { return _mm256_loadu_si256(static_cast<const V*>(p)); }
  static void storeu(void* p, V v) { _mm256_storeu_si256(static_cast<V*>(p), v); }

  // 8x8 words: interleave words, then pairs of words, within each 128-bit lane; then swap
  // 128-bit lanes so that lane g of vector w comes from rows 4g..4g+3.
  [[gnu::always_inline]] static void transpose(V r[8]) {
    V t[8];
#pragma GCC unroll 16
    for (int i = 0; i < 8; i += 2) {
      t[i] = _mm256_unpacklo_epi32(r[i], r[i + 1]);
      t[i + 1] = _mm256_unpackhi_epi32(r[i], r[i + 1]);
    }
    // u[4 g + j]: 128-bit lane k holds word 4 k + j of rows 4 g .. 4 g + 3.
    V u[8];
#pragma GCC unroll 16
    for (int g = 0; g < 2; ++g) {
      u[4 * g + 0] = _mm256_unpacklo_epi64(t[4 * g], t[4 * g + 2]);
      u[4 * g + 1] = _mm256_unpackhi_epi64(t[4 * g], t[4 * g + 2]);
      u[4 * g + 2] = _mm256_unpacklo_epi64(t[4 * g + 1], t[4 * g + 3]);
      u[4 * g + 3] = _mm256_unpackhi_epi64(t[4 * g + 1], t[4 * g + 3]);
    }
#pragma GCC unroll 16
    for (int j = 0; j < 4; ++j) {
      r[j] = _mm256_permute2x128_si256(u[j], u[4 + j], 0x20);
      r[4 + j] = _mm256_permute2x128_si256(u[j], u[4 + j], 0x31);
    }
  }
};

// The same with 4 lanes in xmm (SSSE3 shuffles, implied by the AVX2 target): leftover inputs.
struct xmm_ops {
  using V = __m128i;
  static constexpr std::size_t lanes = 4;
  static V add(V a, V b) { return _mm_add_epi32(a, b); }
  static V xor_(V a, V b) { return _mm_xor_si128(a, b); }
  template <int n> static V ror(V a) {
    if constexpr (n == 16) {
      return _mm_shuffle_epi8(a, _mm_setr_epi8(2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13));
    } else if constexpr (n == 8) {
      return _mm_shuffle_epi8(a, _mm_setr_epi8(1, 2, 3, 0, 5, 6, 7, 4, 9, 10, 11, 8, 13, 14, 15, 12));
    } else {
      return _mm_or_si128(_mm_srli_epi32(a, n), _mm_slli_epi32(a, 32 - n));
    }
  }
  static V set1(std::uint32_t x) { return _mm_set1_epi32(static_cast<int>(x)); }
  static V loadu(const void* p) { return _mm_loadu_si128(static_cast<const V*>(p)); }
  static void storeu(void* p, V v) { _mm_storeu_si128(static_cast<V*>(p), v); }

  [[gnu::always_inline]] static void transpose(V r[4]) {
    const V t0 = _mm_unpacklo_epi32(r[0], r[1]), t1 = _mm_unpackhi_epi32(r[0], r[1]);
    const V t2 = _mm_unpacklo_epi32(r[2], r[3]), t3 = _mm_unpackhi_epi32(r[2], r[3]);
    r[0] = _mm_unpacklo_epi64(t0, t2);
    r[1] = _mm_unpackhi_epi64(t0, t2);
    r[2] = _mm_unpacklo_epi64(t1, t3);
    r[3] = _mm_unpackhi_epi64(t1, t3);
  }
};

} // namespace

void hash_many_avx2(const std::uint8_t* input, std::size_t count, std::size_t blocks, std::uint64_t counter,
                    bool increment, std::uint32_t flags, std::uint32_t flag_start, std::uint32_t flag_end,
                    std::uint8_t* out) {
  const std::size_t stride = blocks * block_len;
  for (; count >= 8; count -= 8) {
    hash_lanes<ymm_ops>(input, 8, blocks, counter, increment, flags, flag_start, flag_end, out);
    input += 8 * stride;
    out += 8 * cv_len;
    counter += increment ? 8 : 0;
  }
  // The rest in one padded pass: xmm when it holds them (about half the work of a ymm pass on
  // CPUs that split ymm ops, the same elsewhere).
  if (count > 4)
    hash_lanes<ymm_ops>(input, count, blocks, counter, increment, flags, flag_start, flag_end, out);
  else if (count > 0)
    hash_lanes<xmm_ops>(input, count, blocks, counter, increment, flags, flag_start, flag_end, out);
}

} // namespace haca::verify::blake3_detail

#pragma GCC pop_options
