#pragma once
// In-register word transposes: rows[i] holds N consecutive 32-bit words of row i; afterwards
// rows[w] holds word w of every row (lane i = row i). Used by the BLAKE3 SIMD paths (one input
// per lane) and by the cpu backend's AVX-512 NCHW epilogue (one output channel per vector).
//
// Include <immintrin.h> before the file's `#pragma GCC target(...)` and this after it: the
// functions are compiled for that ISA and inline its intrinsics. They sit in an anonymous
// namespace, so each file keeps its own copy and the linker cannot swap an AVX-512 one into an
// AVX2 file; a file uses only those of its ISA (16x16 needs AVX-512 F, 8x8 AVX2).
#include <immintrin.h>

namespace haca::verify {
namespace {

// 16x16 words: interleave words, then pairs of words, within each 128-bit lane; then move whole
// 128-bit lanes so that lane g of vector w comes from rows 4g..4g+3.
[[gnu::always_inline]] inline void transpose_16x16(__m512i r[16]) {
  __m512i t[16];
#pragma GCC unroll 16
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  }
  // u[4 g + j]: 128-bit lane k holds word 4 k + j of rows 4 g .. 4 g + 3.
  __m512i u[16];
#pragma GCC unroll 16
  for (int g = 0; g < 4; ++g) {
    u[4 * g + 0] = _mm512_unpacklo_epi64(t[4 * g], t[4 * g + 2]);
    u[4 * g + 1] = _mm512_unpackhi_epi64(t[4 * g], t[4 * g + 2]);
    u[4 * g + 2] = _mm512_unpacklo_epi64(t[4 * g + 1], t[4 * g + 3]);
    u[4 * g + 3] = _mm512_unpackhi_epi64(t[4 * g + 1], t[4 * g + 3]);
  }
#pragma GCC unroll 16
  for (int j = 0; j < 4; ++j) {
    const __m512i a = u[j], b = u[4 + j], c = u[8 + j], d = u[12 + j];
    const __m512i ab01 = _mm512_shuffle_i32x4(a, b, 0x44); // a0 a1 b0 b1
    const __m512i ab23 = _mm512_shuffle_i32x4(a, b, 0xEE); // a2 a3 b2 b3
    const __m512i cd01 = _mm512_shuffle_i32x4(c, d, 0x44);
    const __m512i cd23 = _mm512_shuffle_i32x4(c, d, 0xEE);
    r[j] = _mm512_shuffle_i32x4(ab01, cd01, 0x88);      // a0 b0 c0 d0
    r[4 + j] = _mm512_shuffle_i32x4(ab01, cd01, 0xDD);  // a1 b1 c1 d1
    r[8 + j] = _mm512_shuffle_i32x4(ab23, cd23, 0x88);  // a2 b2 c2 d2
    r[12 + j] = _mm512_shuffle_i32x4(ab23, cd23, 0xDD); // a3 b3 c3 d3
  }
}

// 8x8 words: interleave words, then pairs of words, within each 128-bit lane; then swap 128-bit
// lanes so that lane g of vector w comes from rows 4g..4g+3.
[[gnu::always_inline]] inline void transpose_8x8(__m256i r[8]) {
  __m256i t[8];
#pragma GCC unroll 16
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_epi32(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_epi32(r[i], r[i + 1]);
  }
  // u[4 g + j]: 128-bit lane k holds word 4 k + j of rows 4 g .. 4 g + 3.
  __m256i u[8];
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

[[gnu::always_inline]] inline void transpose_4x4(__m128i r[4]) {
  const __m128i t0 = _mm_unpacklo_epi32(r[0], r[1]), t1 = _mm_unpackhi_epi32(r[0], r[1]);
  const __m128i t2 = _mm_unpacklo_epi32(r[2], r[3]), t3 = _mm_unpackhi_epi32(r[2], r[3]);
  r[0] = _mm_unpacklo_epi64(t0, t2);
  r[1] = _mm_unpackhi_epi64(t0, t2);
  r[2] = _mm_unpacklo_epi64(t1, t3);
  r[3] = _mm_unpackhi_epi64(t1, t3);
}
} // namespace
} // namespace haca::verify
