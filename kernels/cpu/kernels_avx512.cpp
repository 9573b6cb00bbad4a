// AVX-512 VNNI path: vpdpbusd on (a + 128) as u8 times b as s8, corrected by comp = -128 * colsum.
// Compiled for AVX-512 by the target pragma below (no global -m flags); only called when cpuid
// reports avx512f/bw/vl/vnni. Standard headers come before the pragma so that no inline library
// code is compiled for AVX-512.
// GCC 12 warns about _mm512_undefined_epi32() inside its own intrinsics headers (a false
// positive of -Wmaybe-uninitialized, or of -Wuninitialized in the unpacks, once they are
// inlined); nothing here reads undefined data.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "kernels/cpu/cpu_internal.hpp"

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512vnni")

#include "verify/simd_transpose.hpp"

namespace haca::kernels::cpu_detail {
namespace {

struct requant_consts {
  __m512i mult, round, rmask, rhalf, one, lo, hi;
  __m128i shift;
};

inline requant_consts make_consts(const out_desc& out) {
  requant_consts q;
  q.mult = _mm512_set1_epi32(out.multiplier);
  q.round = _mm512_set1_epi64(std::int64_t{1} << 30);
  const std::int32_t mask = static_cast<std::int32_t>((std::int64_t{1} << out.shift) - 1);
  q.rmask = _mm512_set1_epi32(mask);
  q.rhalf = _mm512_set1_epi32(mask >> 1);
  q.one = _mm512_set1_epi32(1);
  q.lo = _mm512_set1_epi32(out.relu ? 0 : -128);
  q.hi = _mm512_set1_epi32(127);
  q.shift = _mm_cvtsi32_si128(out.shift);
  return q;
}

// requantize(v) (+ relu) on 16 lanes, bit-exact with kernels::requantize:
//   high_mul(a, m) = floor((a*m + 2^30) / 2^31)   (m in [2^30, 2^31): no saturation case; the
//   reference's truncating division with its sign-dependent nudge equals this floor)
//   then rounding_divide_by_pot: (x >> s) + ((x & mask) > (mask >> 1) + (x < 0)), then clamp.
inline __m512i requant16(__m512i v, const requant_consts& q) {
  __m512i even = _mm512_mul_epi32(v, q.mult);
  __m512i odd = _mm512_mul_epi32(_mm512_srli_epi64(v, 32), q.mult);
  even = _mm512_srli_epi64(_mm512_add_epi64(even, q.round), 31); // bits 31..62 -> low dword
  odd = _mm512_slli_epi64(_mm512_add_epi64(odd, q.round), 1);    // bits 31..62 -> high dword
  const __m512i x = _mm512_mask_blend_epi32(0xAAAA, even, odd);
  const __m512i rem = _mm512_and_si512(x, q.rmask);
  const __m512i thr = _mm512_add_epi32(q.rhalf, _mm512_srli_epi32(x, 31));
  __m512i r = _mm512_sra_epi32(x, q.shift);
  r = _mm512_mask_add_epi32(r, _mm512_cmpgt_epi32_mask(rem, thr), r, q.one);
  return _mm512_max_epi32(_mm512_min_epi32(r, q.hi), q.lo);
}

// The i8_transposed (NCHW) epilogue for up to 16 rows of one column block: sums[r] holds row
// r's 16 column sums with comp and bias added (rows past h are ignored). Transposed in
// registers, each column's h bytes are one masked store to dst + c * ld.
inline void store_transposed(__m512i sums[16], int h, int valid, std::int8_t* dst, std::size_t ld,
                             const requant_consts& q) {
  verify::transpose_16x16(sums);
  const __mmask16 rows = h >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << h) - 1);
  for (int c = 0; c < valid; ++c)
    _mm_mask_storeu_epi8(dst + static_cast<std::size_t>(c) * ld, rows, _mm512_cvtsepi32_epi8(requant16(sums[c], q)));
}

// a: MR rows of (a + 128) as u8, row r at a + r * as; reads kp bytes of each row (the bytes past
// k multiply b's zero padding, so they may be anything, e.g. the next row's first bytes).
template <int MR, int NB>
void tile(const std::uint8_t* a, int as, int kp, const packed_b& b, int blk, int row, const out_desc& out) {
  __m512i acc[MR][NB];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int j = 0; j < NB; ++j) acc[r][j] = _mm512_setzero_si512();
  const std::size_t bs = static_cast<std::size_t>(16) * kp;
  const std::int8_t* bp = b.data + static_cast<std::size_t>(blk) * bs;
  const int groups = kp / 4;
  if (out.kind == out_kind::s32) {
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
      for (int j = 0; j < NB; ++j)
        _mm_prefetch(reinterpret_cast<const char*>(out.c + static_cast<std::size_t>(row + r) * out.ld + (blk + j) * 16),
                     _MM_HINT_T0);
  }
  for (int g = 0; g < groups; ++g) {
    __m512i bv[NB];
#pragma GCC unroll 4
    for (int j = 0; j < NB; ++j) bv[j] = _mm512_load_si512(bp + j * bs + static_cast<std::size_t>(g) * 64);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      std::int32_t x;
      std::memcpy(&x, a + static_cast<std::size_t>(r) * as + static_cast<std::size_t>(g) * 4, 4);
      const __m512i av = _mm512_set1_epi32(x);
#pragma GCC unroll 4
      for (int j = 0; j < NB; ++j) acc[r][j] = _mm512_dpbusd_epi32(acc[r][j], av, bv[j]);
    }
  }
  const requant_consts q = make_consts(out);
#pragma GCC unroll 4
  for (int j = 0; j < NB; ++j) {
    const int col0 = (blk + j) * 16;
    const int valid = b.n - col0 < 16 ? b.n - col0 : 16;
    const __mmask16 m = valid >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << valid) - 1);
    __m512i add = _mm512_loadu_si512(b.comp + col0);
    if (out.kind == out_kind::s32) {
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) {
        std::int32_t* dst = out.c + static_cast<std::size_t>(row + r) * out.ld + col0;
        if (valid == 16) _mm512_storeu_si512(dst, _mm512_add_epi32(acc[r][j], add));
        else _mm512_mask_storeu_epi32(dst, m, _mm512_add_epi32(acc[r][j], add));
      }
      continue;
    }
    add = _mm512_add_epi32(add, _mm512_maskz_loadu_epi32(m, out.bias + col0));
    if (out.kind == out_kind::i8) {
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) {
        const __m128i bytes = _mm512_cvtsepi32_epi8(requant16(_mm512_add_epi32(acc[r][j], add), q));
        std::int8_t* dst = out.o + static_cast<std::size_t>(row + r) * out.ld + col0;
        if (valid == 16) _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), bytes);
        else _mm_mask_storeu_epi8(dst, m, bytes);
      }
    } else {
      __m512i sums[16];
#pragma GCC unroll 16
      for (int r = 0; r < 16; ++r) sums[r] = r < MR ? _mm512_add_epi32(acc[r][j], add) : _mm512_setzero_si512();
      store_transposed(sums, MR, valid, out.o + static_cast<std::size_t>(col0) * out.ld + row, out.ld, q);
    }
  }
}

// Small k (kp <= 16, G = kp / 4 groups): the G vectors of one column block stay in registers and
// each row is one short dpbusd chain started from comp (+ bias), no accumulator tile.
template <int G>
void small_k(const std::uint8_t* a, int as, int rows, const packed_b& b, int blk, int row, const out_desc& out) {
  const std::int8_t* bp = b.data + static_cast<std::size_t>(blk) * 16 * b.kp;
  __m512i bv[G];
#pragma GCC unroll 4
  for (int g = 0; g < G; ++g) bv[g] = _mm512_load_si512(bp + g * 64);
  const int col0 = blk * 16;
  const int valid = b.n - col0 < 16 ? b.n - col0 : 16;
  const __mmask16 m = valid >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << valid) - 1);
  __m512i init = _mm512_loadu_si512(b.comp + col0);
  auto dot = [&](int r) {
    __m512i acc = init;
    const std::uint8_t* ar = a + static_cast<std::size_t>(r) * as;
#pragma GCC unroll 4
    for (int g = 0; g < G; ++g) {
      std::int32_t x;
      std::memcpy(&x, ar + g * 4, 4);
      acc = _mm512_dpbusd_epi32(acc, _mm512_set1_epi32(x), bv[g]);
    }
    return acc;
  };
  if (out.kind == out_kind::s32) {
    std::int32_t* dst = out.c + static_cast<std::size_t>(row) * out.ld + col0;
    if (valid == 16) {
#pragma GCC unroll 4
      for (int r = 0; r < rows; ++r) _mm512_storeu_si512(dst + static_cast<std::size_t>(r) * out.ld, dot(r));
    } else {
      for (int r = 0; r < rows; ++r) _mm512_mask_storeu_epi32(dst + static_cast<std::size_t>(r) * out.ld, m, dot(r));
    }
    return;
  }
  init = _mm512_add_epi32(init, _mm512_maskz_loadu_epi32(m, out.bias + col0));
  const requant_consts q = make_consts(out);
  if (out.kind == out_kind::i8) {
    std::int8_t* dst = out.o + static_cast<std::size_t>(row) * out.ld + col0;
#pragma GCC unroll 4
    for (int r = 0; r < rows; ++r) {
      const __m128i bytes = _mm512_cvtsepi32_epi8(requant16(dot(r), q));
      if (valid == 16) _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + static_cast<std::size_t>(r) * out.ld), bytes);
      else _mm_mask_storeu_epi8(dst + static_cast<std::size_t>(r) * out.ld, m, bytes);
    }
    return;
  }
  for (int r0 = 0; r0 < rows; r0 += 16) {
    const int h = rows - r0 < 16 ? rows - r0 : 16;
    __m512i sums[16];
#pragma GCC unroll 16
    for (int r = 0; r < 16; ++r) sums[r] = r < h ? dot(r0 + r) : _mm512_setzero_si512();
    store_transposed(sums, h, valid, out.o + static_cast<std::size_t>(col0) * out.ld + row + r0, out.ld, q);
  }
}

using small_k_fn = void (*)(const std::uint8_t*, int, int, const packed_b&, int, int, const out_desc&);
small_k_fn small_k_for(int kp) {
  return kp <= 4 ? &small_k<1> : kp <= 8 ? &small_k<2> : kp <= 12 ? &small_k<3> : &small_k<4>;
}

using tile_fn = void (*)(const std::uint8_t*, int, int, const packed_b&, int, int, const out_desc&);

template <int MR>
constexpr tile_fn pick(int nb) {
  return nb == 1 ? &tile<MR, 1> : nb == 2 ? &tile<MR, 2> : nb == 3 ? &tile<MR, 3> : &tile<MR, 4>;
}

// One column block (n <= 16): up to 16 rows, for 16 independent accumulator chains.
tile_fn tile_narrow(int mr) {
  switch (mr) {
  case 9: return &tile<9, 1>;
  case 10: return &tile<10, 1>;
  case 11: return &tile<11, 1>;
  case 12: return &tile<12, 1>;
  case 13: return &tile<13, 1>;
  case 14: return &tile<14, 1>;
  case 15: return &tile<15, 1>;
  default: return &tile<16, 1>;
  }
}

// Two column blocks: up to 12 rows (24 accumulators, 2 weight vectors, 1 broadcast).
tile_fn tile_two(int mr) {
  switch (mr) {
  case 9: return &tile<9, 2>;
  case 10: return &tile<10, 2>;
  case 11: return &tile<11, 2>;
  default: return &tile<12, 2>;
  }
}

tile_fn tile_for(int mr, int nb) {
  if (mr > 8) return nb == 1 ? tile_narrow(mr) : tile_two(mr);
  switch (mr) {
  case 1: return pick<1>(nb);
  case 2: return pick<2>(nb);
  case 3: return pick<3>(nb);
  case 4: return pick<4>(nb);
  case 5: return pick<5>(nb > 2 ? 2 : nb);
  case 6: return pick<6>(nb > 2 ? 2 : nb);
  case 7: return pick<7>(nb > 2 ? 2 : nb);
  default: return pick<8>(nb > 2 ? 2 : nb);
  }
}

} // namespace

void run_avx512(const std::int8_t* a, std::size_t lda, int rows, int row_base, const packed_b& b, int blk0,
                int blk1, const out_desc& out, void* scratch) {
  const int kp = b.kp, k = b.k;
  const int mc = a_chunk_rows(kp);
  // Column blocks per panel: keep a panel of b (panel x 16 x kp bytes) within ~256 KiB of L2.
  int panel = (256 * 1024) / (16 * (kp > 0 ? kp : 4));
  panel = panel < 4 ? 4 : panel - panel % 4;
  auto* ap = static_cast<std::uint8_t*>(scratch);
  for (int r0 = 0; r0 < rows; r0 += mc) {
    const int mr = rows - r0 < mc ? rows - r0 : mc;
    const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
    int as = kp; // row stride of the packed rows
    if (lda == static_cast<std::size_t>(k)) {
      // Contiguous rows: a + 128 as u8 (xor 0x80) in one pass over mr * k bytes, row stride k.
      // A tile reads kp >= k bytes of a row: the last kp - k of them are the next row's (or the
      // scratch's slack), times b's zero padding.
      as = k;
      const std::int8_t* src = a + static_cast<std::size_t>(r0) * lda;
      const std::size_t total = static_cast<std::size_t>(mr) * k;
      std::size_t i = 0;
      for (; i + 64 <= total; i += 64)
        _mm512_storeu_si512(ap + i, _mm512_xor_si512(_mm512_loadu_si512(src + i), flip));
      if (i < total) { // full 64-byte store into the scratch's 64 bytes of slack
        const __mmask64 in_mask = ~std::uint64_t{0} >> (64 - (total - i));
        _mm512_storeu_si512(ap + i, _mm512_xor_si512(_mm512_maskz_loadu_epi8(in_mask, src + i), flip));
      } else {
        _mm512_storeu_si512(ap + i, flip); // defined bytes for the reads past the last row
      }
    } else {
      // a + 128 as u8 (xor 0x80), rows padded to kp with 0x80 (the padded b columns are 0).
      for (int r = 0; r < mr; ++r) {
        const std::int8_t* src = a + static_cast<std::size_t>(r0 + r) * lda;
        std::uint8_t* dst = ap + static_cast<std::size_t>(r) * kp;
        int i = 0;
        for (; i + 64 <= k; i += 64)
          _mm512_storeu_si512(dst + i, _mm512_xor_si512(_mm512_loadu_si512(src + i), flip));
        if (i < kp) { // k - i < 64 bytes left, kp - i <= 64
          // A full 64-byte store (masked stores are slow on some CPUs): it may spill into the
          // next row, which is written next, or into the scratch's 64 bytes of slack.
          const int left = k - i;
          const __mmask64 in_mask = left > 0 ? (~std::uint64_t{0} >> (64 - left)) : 0;
          _mm512_storeu_si512(dst + i, _mm512_xor_si512(_mm512_maskz_loadu_epi8(in_mask, src + i), flip));
        }
      }
    }
    if (kp > 0 && kp <= 16) {
      const small_k_fn f = small_k_for(kp);
      for (int blk = blk0; blk < blk1; ++blk) f(ap, as, mr, b, blk, row_base + r0, out);
      continue;
    }
    for (int p0 = blk0; p0 < blk1; p0 += panel) {
      const int p1 = blk1 - p0 < panel ? blk1 : p0 + panel;
      const int rows_per_tile = p1 - p0 == 1 ? 16 : p1 - p0 == 2 ? 12 : 8;
      for (int i = 0; i < mr; i += rows_per_tile) {
        const int h = mr - i < rows_per_tile ? mr - i : rows_per_tile;
        const int nbw = h <= 4 ? 4 : 2;
        for (int blk = p0; blk < p1; blk += nbw) {
          const int w = p1 - blk < nbw ? p1 - blk : nbw;
          tile_for(h, w)(ap + static_cast<std::size_t>(i) * as, as, kp, b, blk, row_base + r0 + i, out);
        }
      }
    }
  }
}

void maxpool2_row_avx512(const std::int8_t* r0, const std::int8_t* r1, int ow, std::int8_t* d) {
  // 64 input columns (32 outputs) at a time; chunks start at even columns, so pairs never
  // straddle two chunks.
  for (int x = 0; x < 2 * ow; x += 64) {
    const int n = 2 * ow - x < 64 ? 2 * ow - x : 64;
    const __mmask64 in_mask = ~std::uint64_t{0} >> (64 - n);
    const __m512i v =
        _mm512_max_epi8(_mm512_maskz_loadu_epi8(in_mask, r0 + x), _mm512_maskz_loadu_epi8(in_mask, r1 + x));
    // Each 16-bit word holds a pair: its low byte sign-extended, and its high byte.
    const __m512i even = _mm512_srai_epi16(_mm512_slli_epi16(v, 8), 8);
    const __m512i odd = _mm512_srai_epi16(v, 8);
    const __m256i pairs = _mm512_cvtepi16_epi8(_mm512_max_epi16(even, odd));
    _mm256_mask_storeu_epi8(d + x / 2, static_cast<__mmask32>(~std::uint32_t{0} >> (32 - n / 2)), pairs);
  }
}

} // namespace haca::kernels::cpu_detail

#pragma GCC pop_options
