#pragma once
// Lane-parallel BLAKE3 compression, shared by the SIMD files: one input per 32-bit lane, so a
// vector of L lanes compresses L inputs with exactly the scalar algorithm, word for word.
//
// In a SIMD file, include this after the file's `#pragma GCC target(...)`, so the templates are
// compiled for that ISA and its intrinsics inline; include the standard headers it includes
// before the pragma, so that they are not. Instantiate the templates only with ops types declared in an
// anonymous namespace: each instantiation then has internal linkage, so the AVX2 and the
// AVX-512 file each keep their own copy and the linker cannot swap one for the other.
//
// An ops type provides, for its vector type V of `lanes` 32-bit lanes:
//   add, xor_, ror<n> (rotate right each lane) (all that rounds_lanes needs), set1, loadu, storeu,
//   transpose(V rows[lanes]): rows[i] holds `lanes` consecutive words of input i; afterwards
//   rows[w] holds word w of every input (lane i = input i).
#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "verify/blake3_internal.hpp"
#include "verify/blake3_rounds.hpp"
#include "verify/simd_transpose.hpp"

namespace haca::verify::blake3_detail {

namespace {
// The ymm and xmm ops without ror, which differs by ISA (vprord with AVX-512 VL, shuffles and
// shifts with AVX2): each SIMD file derives its ops from these and adds its ror.
struct ymm_base {
  using V = __m256i;
  static constexpr std::size_t lanes = 8;
  static V add(V a, V b) { return _mm256_add_epi32(a, b); }
  static V xor_(V a, V b) { return _mm256_xor_si256(a, b); }
  static V set1(std::uint32_t x) { return _mm256_set1_epi32(static_cast<int>(x)); }
  static V loadu(const void* p) { return _mm256_loadu_si256(static_cast<const V*>(p)); }
  static void storeu(void* p, V v) { _mm256_storeu_si256(static_cast<V*>(p), v); }
  [[gnu::always_inline]] static void transpose(V r[8]) { transpose_8x8(r); }
};

struct xmm_base {
  using V = __m128i;
  static constexpr std::size_t lanes = 4;
  static V add(V a, V b) { return _mm_add_epi32(a, b); }
  static V xor_(V a, V b) { return _mm_xor_si128(a, b); }
  static V set1(std::uint32_t x) { return _mm_set1_epi32(static_cast<int>(x)); }
  static V loadu(const void* p) { return _mm_loadu_si128(static_cast<const V*>(p)); }
  static void storeu(void* p, V v) { _mm_storeu_si128(static_cast<V*>(p), v); }
  [[gnu::always_inline]] static void transpose(V r[4]) { transpose_4x4(r); }
};
} // namespace

// hash_many_fn for 1..lanes inputs in one pass. Missing lanes repeat the last input and their
// results are dropped: a pass costs the same however many lanes are used.
template <class Ops>
void hash_lanes(const std::uint8_t* input, std::size_t count, std::size_t blocks, std::uint64_t counter,
                bool increment, std::uint32_t flags, std::uint32_t flag_start, std::uint32_t flag_end,
                std::uint8_t* out) {
  using V = typename Ops::V;
  constexpr std::size_t lanes = Ops::lanes;
  const std::size_t stride = blocks * block_len;
  const std::uint8_t* in[lanes];
  alignas(64) std::uint32_t ctr_lo[lanes];
  alignas(64) std::uint32_t ctr_hi[lanes];
  for (std::size_t i = 0; i < lanes; ++i) {
    const std::size_t j = i < count ? i : count - 1;
    in[i] = input + j * stride;
    const std::uint64_t c = counter + (increment ? j : 0);
    ctr_lo[i] = static_cast<std::uint32_t>(c);
    ctr_hi[i] = static_cast<std::uint32_t>(c >> 32);
  }
  const V lo = Ops::loadu(ctr_lo);
  const V hi = Ops::loadu(ctr_hi);

  // Every loop over vectors below is unrolled so that the arrays live in registers: left as
  // loops, GCC keeps them in memory and the stores and reloads cost as much as the rounds.
  V h[8];
#pragma GCC unroll 8
  for (std::size_t i = 0; i < 8; ++i) h[i] = Ops::set1(iv[i]);
  for (std::size_t b = 0; b < blocks; ++b) {
    // The block's 16 words from every input, `lanes` words per load.
    V m[16];
#pragma GCC unroll 4
    for (std::size_t part = 0; part < 16 / lanes; ++part) {
      V rows[lanes];
#pragma GCC unroll 16
      for (std::size_t i = 0; i < lanes; ++i) rows[i] = Ops::loadu(in[i] + b * block_len + part * lanes * 4);
      Ops::transpose(rows);
#pragma GCC unroll 16
      for (std::size_t w = 0; w < lanes; ++w) m[part * lanes + w] = rows[w];
    }
    const std::uint32_t f = flags | (b == 0 ? flag_start : 0) | (b + 1 == blocks ? flag_end : 0);
    V v[16] = {h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], Ops::set1(iv[0]), Ops::set1(iv[1]),
               Ops::set1(iv[2]), Ops::set1(iv[3]), lo, hi, Ops::set1(block_len), Ops::set1(f)};
    rounds_lanes<Ops>(v, m);
#pragma GCC unroll 8
    for (std::size_t i = 0; i < 8; ++i) h[i] = Ops::xor_(v[i], v[i + 8]);
  }

  // Lane i of h[w] is word w of input i's CV: a few scalar moves per input, next to 16 blocks
  // (or one parent) of vector work, so no transpose back.
  alignas(64) std::uint32_t words[8][lanes];
#pragma GCC unroll 8
  for (std::size_t w = 0; w < 8; ++w) Ops::storeu(words[w], h[w]);
  for (std::size_t i = 0; i < count; ++i)
    for (std::size_t w = 0; w < 8; ++w) std::memcpy(out + i * cv_len + 4 * w, &words[w][i], 4);
}

// hash_many (see blake3_internal.hpp) with the given ops types, widest first: whole passes of the
// widest, then what is left in one padded pass of the narrowest that holds it (on Zen 4 a zmm op
// costs two ymm ones, and a ymm op about one xmm op).
template <class T, class...>
struct first_of {
  using type = T;
};

template <class Ops, class... Narrower>
void hash_rest(const std::uint8_t* input, std::size_t count, std::size_t blocks, std::uint64_t counter,
               bool increment, std::uint32_t flags, std::uint32_t flag_start, std::uint32_t flag_end,
               std::uint8_t* out) {
  if constexpr (sizeof...(Narrower) > 0) {
    if (count <= first_of<Narrower...>::type::lanes) {
      hash_rest<Narrower...>(input, count, blocks, counter, increment, flags, flag_start, flag_end, out);
      return;
    }
  }
  hash_lanes<Ops>(input, count, blocks, counter, increment, flags, flag_start, flag_end, out);
}

template <class Wide, class... Narrower>
void hash_many_lanes(const std::uint8_t* input, std::size_t count, std::size_t blocks, std::uint64_t counter,
                     bool increment, std::uint32_t flags, std::uint32_t flag_start, std::uint32_t flag_end,
                     std::uint8_t* out) {
  const std::size_t stride = blocks * block_len;
  for (; count >= Wide::lanes; count -= Wide::lanes) {
    hash_lanes<Wide>(input, Wide::lanes, blocks, counter, increment, flags, flag_start, flag_end, out);
    input += Wide::lanes * stride;
    out += Wide::lanes * cv_len;
    counter += increment ? Wide::lanes : 0;
  }
  if (count > 0) hash_rest<Wide, Narrower...>(input, count, blocks, counter, increment, flags, flag_start, flag_end, out);
}

} // namespace haca::verify::blake3_detail
