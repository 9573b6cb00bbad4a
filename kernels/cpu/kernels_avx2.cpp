// AVX2 path: activations sign-extended to int16, weights sign-extended from the shared packed
// layout (vpmovsxbw), products by vpmaddwd (exact for int8 x int8 pairs: no saturation, unlike
// vpmaddubsw), 32-bit wrapping adds. Compiled for AVX2 by the target pragma below; only called
// when cpuid reports avx2. Standard headers come before the pragma.
#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "kernels/cpu/cpu_internal.hpp"

#pragma GCC push_options
#pragma GCC target("avx2,fma")

namespace haca::kernels::cpu_detail {
namespace {

struct requant_consts {
  __m256i mult, round, rmask, rhalf, lo, hi;
  __m128i shift;
};

inline requant_consts make_consts(const out_desc& out) {
  requant_consts q;
  q.mult = _mm256_set1_epi32(out.multiplier);
  q.round = _mm256_set1_epi64x(std::int64_t{1} << 30);
  const std::int32_t mask = static_cast<std::int32_t>((std::int64_t{1} << out.shift) - 1);
  q.rmask = _mm256_set1_epi32(mask);
  q.rhalf = _mm256_set1_epi32(mask >> 1);
  q.lo = _mm256_set1_epi32(out.relu ? 0 : -128);
  q.hi = _mm256_set1_epi32(127);
  q.shift = _mm_cvtsi32_si128(out.shift);
  return q;
}

// Same arithmetic as requant16 in kernels_avx512.cpp (see there).
inline __m256i requant8(__m256i v, const requant_consts& q) {
  __m256i even = _mm256_mul_epi32(v, q.mult);
  __m256i odd = _mm256_mul_epi32(_mm256_srli_epi64(v, 32), q.mult);
  even = _mm256_srli_epi64(_mm256_add_epi64(even, q.round), 31);
  odd = _mm256_slli_epi64(_mm256_add_epi64(odd, q.round), 1);
  const __m256i x = _mm256_blend_epi32(even, odd, 0xAA);
  const __m256i rem = _mm256_and_si256(x, q.rmask);
  const __m256i thr = _mm256_add_epi32(q.rhalf, _mm256_srli_epi32(x, 31));
  __m256i r = _mm256_sra_epi32(x, q.shift);
  r = _mm256_sub_epi32(r, _mm256_cmpgt_epi32(rem, thr)); // true = -1
  return _mm256_max_epi32(_mm256_min_epi32(r, q.hi), q.lo);
}

inline std::uint64_t to_bytes8(__m256i v) { // v already in [-128, 127]
  const __m256i p16 = _mm256_packs_epi32(v, v);
  const __m256i p8 = _mm256_packs_epi16(p16, p16);
  const auto lo = static_cast<std::uint32_t>(_mm_cvtsi128_si32(_mm256_castsi256_si128(p8)));
  const auto hi = static_cast<std::uint32_t>(_mm_cvtsi128_si32(_mm256_extracti128_si256(p8, 1)));
  return lo | (static_cast<std::uint64_t>(hi) << 32);
}

// MR rows x 8 columns (half `half` of column block blk).
template <int MR>
void tile(const std::int16_t* a, int kp, const packed_b& b, int blk, int half, int row, const out_desc& out) {
  __m256i lo[MR], hi[MR];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) lo[r] = hi[r] = _mm256_setzero_si256();
  const std::int8_t* bp = b.data + static_cast<std::size_t>(blk) * 16 * kp + half * 32;
  const int groups = kp / 4;
  for (int g = 0; g < groups; ++g) {
    const std::int8_t* gp = bp + static_cast<std::size_t>(g) * 64;
    const __m256i b0 = _mm256_cvtepi8_epi16(_mm_load_si128(reinterpret_cast<const __m128i*>(gp)));
    const __m256i b1 = _mm256_cvtepi8_epi16(_mm_load_si128(reinterpret_cast<const __m128i*>(gp + 16)));
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      long long x;
      std::memcpy(&x, a + static_cast<std::size_t>(r) * kp + static_cast<std::size_t>(g) * 4, 8);
      const __m256i av = _mm256_set1_epi64x(x);
      lo[r] = _mm256_add_epi32(lo[r], _mm256_madd_epi16(av, b0));
      hi[r] = _mm256_add_epi32(hi[r], _mm256_madd_epi16(av, b1));
    }
  }
  const int col0 = blk * 16 + half * 8;
  const int valid = b.n - col0 < 8 ? b.n - col0 : 8;
  const requant_consts q = make_consts(out);
  __m256i bias = _mm256_setzero_si256();
  if (out.kind != out_kind::s32) {
    alignas(32) std::int32_t bb[8] = {};
    std::memcpy(bb, out.bias + col0, sizeof(std::int32_t) * static_cast<std::size_t>(valid));
    bias = _mm256_load_si256(reinterpret_cast<const __m256i*>(bb));
  }
  alignas(8) std::int8_t t[MR][8] = {};
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
    // lanes: lo = [c0 c0 c1 c1 | c2 c2 c3 c3] partial sums, hi likewise for c4..c7
    const __m256i s = _mm256_permute4x64_epi64(_mm256_hadd_epi32(lo[r], hi[r]), 0xD8);
    if (out.kind == out_kind::s32) {
      std::int32_t* dst = out.c + static_cast<std::size_t>(row + r) * out.ld + col0;
      if (valid == 8) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), s);
      } else {
        alignas(32) std::int32_t tmp[8];
        _mm256_store_si256(reinterpret_cast<__m256i*>(tmp), s);
        std::memcpy(dst, tmp, sizeof(std::int32_t) * static_cast<std::size_t>(valid));
      }
      continue;
    }
    const std::uint64_t bytes = to_bytes8(requant8(_mm256_add_epi32(s, bias), q));
    if (out.kind == out_kind::i8) {
      std::memcpy(out.o + static_cast<std::size_t>(row + r) * out.ld + col0, &bytes, static_cast<std::size_t>(valid));
    } else {
      std::memcpy(t[r], &bytes, 8);
    }
  }
  if (out.kind == out_kind::i8_transposed) {
    for (int c = 0; c < valid; ++c) {
      std::int8_t* dst = out.o + static_cast<std::size_t>(col0 + c) * out.ld + row;
      for (int r = 0; r < MR; ++r) dst[r] = t[r][c];
    }
  }
}

using tile_fn = void (*)(const std::int16_t*, int, const packed_b&, int, int, int, const out_desc&);

tile_fn tile_for(int mr) {
  switch (mr) {
  case 1: return &tile<1>;
  case 2: return &tile<2>;
  case 3: return &tile<3>;
  case 4: return &tile<4>;
  case 5: return &tile<5>;
  default: return &tile<6>;
  }
}

} // namespace

void run_avx2(const std::int8_t* a, std::size_t lda, int rows, int row_base, const packed_b& b, int blk0, int blk1,
              const out_desc& out, void* scratch) {
  const int kp = b.kp, k = b.k;
  const int mc = a_chunk_rows(kp);
  int panel = (256 * 1024) / (16 * (kp > 0 ? kp : 4));
  panel = panel < 1 ? 1 : panel;
  auto* ap = static_cast<std::int16_t*>(scratch);
  for (int r0 = 0; r0 < rows; r0 += mc) {
    const int mr = rows - r0 < mc ? rows - r0 : mc;
    for (int r = 0; r < mr; ++r) {
      const std::int8_t* src = a + static_cast<std::size_t>(r0 + r) * lda;
      std::int16_t* dst = ap + static_cast<std::size_t>(r) * kp;
      for (int i = 0; i < k; ++i) dst[i] = src[i];
      for (int i = k; i < kp; ++i) dst[i] = 0;
    }
    for (int p0 = blk0; p0 < blk1; p0 += panel) {
      const int p1 = blk1 - p0 < panel ? blk1 : p0 + panel;
      for (int i = 0; i < mr; i += 6) {
        const int h = mr - i < 6 ? mr - i : 6;
        const tile_fn f = tile_for(h);
        for (int blk = p0; blk < p1; ++blk) {
          f(ap + static_cast<std::size_t>(i) * kp, kp, b, blk, 0, row_base + r0 + i, out);
          if (blk * 16 + 8 < b.n) f(ap + static_cast<std::size_t>(i) * kp, kp, b, blk, 1, row_base + r0 + i, out);
        }
      }
    }
  }
}

void maxpool2_row_avx2(const std::int8_t* r0, const std::int8_t* r1, int ow, std::int8_t* d) {
  // 32 input columns (16 outputs) at a time, starting at even columns; a short last chunk goes
  // through zeroed buffers (AVX2 has no masked byte loads or stores).
  for (int x = 0; x < 2 * ow; x += 32) {
    const int n = 2 * ow - x < 32 ? 2 * ow - x : 32;
    alignas(32) std::int8_t a[32] = {}, b[32] = {}, o[16];
    std::memcpy(a, r0 + x, static_cast<std::size_t>(n));
    std::memcpy(b, r1 + x, static_cast<std::size_t>(n));
    const __m256i v = _mm256_max_epi8(_mm256_load_si256(reinterpret_cast<const __m256i*>(a)),
                                      _mm256_load_si256(reinterpret_cast<const __m256i*>(b)));
    // Each 16-bit word holds a pair: its low byte sign-extended, and its high byte.
    const __m256i even = _mm256_srai_epi16(_mm256_slli_epi16(v, 8), 8);
    const __m256i odd = _mm256_srai_epi16(v, 8);
    const __m256i m = _mm256_max_epi16(even, odd);
    _mm_store_si128(reinterpret_cast<__m128i*>(o),
                    _mm_packs_epi16(_mm256_castsi256_si128(m), _mm256_extracti128_si256(m, 1)));
    std::memcpy(d + x / 2, o, static_cast<std::size_t>(n / 2));
  }
}

} // namespace haca::kernels::cpu_detail

#pragma GCC pop_options
