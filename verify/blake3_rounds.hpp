#pragma once
// The BLAKE3 rounds on any "vector" type: the SIMD paths run them with one input per lane
// (blake3_lanes.hpp), the portable path on a plain uint32_t. An ops type provides add, xor_
// and ror<n> (rotate right each lane) for its type V.
#include <cstddef>

#include "verify/blake3_internal.hpp"

namespace haca::verify::blake3_detail {

template <class Ops>
[[gnu::always_inline]] inline void g_lanes(typename Ops::V& a, typename Ops::V& b, typename Ops::V& c,
                                           typename Ops::V& d, typename Ops::V mx, typename Ops::V my) {
  a = Ops::add(Ops::add(a, mx), b); // mx first: b is the last input to become ready
  d = Ops::template ror<16>(Ops::xor_(d, a));
  c = Ops::add(c, d);
  b = Ops::template ror<12>(Ops::xor_(b, c));
  a = Ops::add(Ops::add(a, my), b);
  d = Ops::template ror<8>(Ops::xor_(d, a));
  c = Ops::add(c, d);
  b = Ops::template ror<7>(Ops::xor_(b, c));
}

// The 7 rounds: G on the columns, then on the diagonals, of the 4x4 state.
template <class Ops>
[[gnu::always_inline]] inline void rounds_lanes(typename Ops::V v[16], const typename Ops::V m[16]) {
#pragma GCC unroll 7
  for (std::size_t r = 0; r < 7; ++r) {
    const auto& s = msg_schedule[r];
    g_lanes<Ops>(v[0], v[4], v[8], v[12], m[s[0]], m[s[1]]);
    g_lanes<Ops>(v[1], v[5], v[9], v[13], m[s[2]], m[s[3]]);
    g_lanes<Ops>(v[2], v[6], v[10], v[14], m[s[4]], m[s[5]]);
    g_lanes<Ops>(v[3], v[7], v[11], v[15], m[s[6]], m[s[7]]);
    g_lanes<Ops>(v[0], v[5], v[10], v[15], m[s[8]], m[s[9]]);
    g_lanes<Ops>(v[1], v[6], v[11], v[12], m[s[10]], m[s[11]]);
    g_lanes<Ops>(v[2], v[7], v[8], v[13], m[s[12]], m[s[13]]);
    g_lanes<Ops>(v[3], v[4], v[9], v[14], m[s[14]], m[s[15]]);
  }
}

} // namespace haca::verify::blake3_detail
