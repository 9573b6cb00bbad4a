// BLAKE3: the official test vectors and a from-the-spec reference, on every ISA path.
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "verify/blake3.hpp"

using namespace haca::verify;

namespace {

constexpr blake3_isa all_isas[] = {blake3_isa::portable, blake3_isa::avx2, blake3_isa::avx512};

// Puts the path in use back however the test ends.
struct restore_isa {
  blake3_isa saved = blake3_current_isa();
  ~restore_isa() { blake3_force_isa(saved); }
};

// The ISA paths this CPU runs; says which it cannot, so none is skipped silently.
std::vector<blake3_isa> usable_isas() {
  restore_isa restore;
  std::vector<blake3_isa> out;
  for (const blake3_isa isa : all_isas) {
    if (blake3_force_isa(isa))
      out.push_back(isa);
    else
      MESSAGE("blake3 path " << std::string(blake3_isa_name(isa)) << " skipped: this CPU lacks it");
  }
  return out;
}

// The official vectors' input: byte i is i % 251.
std::string vector_input(std::size_t len) {
  std::string s(len, '\0');
  for (std::size_t i = 0; i < len; ++i) s[i] = static_cast<char>(i % 251);
  return s;
}

// An independent BLAKE3 (hash mode, 32-byte output) written straight from the spec: one block
// at a time, and the tree by its definition (the left subtree holds the largest power of 2
// chunks that leaves the right one non-empty). Slow, and shares no code with verify/blake3.cpp.
namespace reference {

constexpr std::uint32_t iv[8] = {0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A,
                                 0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19};
constexpr std::size_t perm[16] = {2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8};
constexpr std::uint32_t chunk_start = 1, chunk_end = 2, parent = 4, root = 8;
using words = std::array<std::uint32_t, 8>;

void g(std::uint32_t* v, int a, int b, int c, int d, std::uint32_t x, std::uint32_t y) {
  v[a] += v[b] + x;
  v[d] = std::rotr(v[d] ^ v[a], 16);
  v[c] += v[d];
  v[b] = std::rotr(v[b] ^ v[c], 12);
  v[a] += v[b] + y;
  v[d] = std::rotr(v[d] ^ v[a], 8);
  v[c] += v[d];
  v[b] = std::rotr(v[b] ^ v[c], 7);
}

words compress(const words& cv, const std::uint8_t* block, std::uint32_t len, std::uint64_t counter,
               std::uint32_t flags) {
  std::uint32_t m[16] = {};
  for (std::size_t i = 0; i < len; ++i) m[i / 4] |= std::uint32_t{block[i]} << (8 * (i % 4));
  std::uint32_t v[16] = {cv[0], cv[1], cv[2], cv[3], cv[4], cv[5], cv[6], cv[7], iv[0], iv[1], iv[2], iv[3],
                         static_cast<std::uint32_t>(counter), static_cast<std::uint32_t>(counter >> 32), len, flags};
  for (int r = 0; r < 7; ++r) {
    g(v, 0, 4, 8, 12, m[0], m[1]);
    g(v, 1, 5, 9, 13, m[2], m[3]);
    g(v, 2, 6, 10, 14, m[4], m[5]);
    g(v, 3, 7, 11, 15, m[6], m[7]);
    g(v, 0, 5, 10, 15, m[8], m[9]);
    g(v, 1, 6, 11, 12, m[10], m[11]);
    g(v, 2, 7, 8, 13, m[12], m[13]);
    g(v, 3, 4, 9, 14, m[14], m[15]);
    std::uint32_t next[16];
    for (int i = 0; i < 16; ++i) next[i] = m[perm[i]];
    std::copy(next, next + 16, m);
  }
  words out;
  for (int i = 0; i < 8; ++i) out[i] = v[i] ^ v[i + 8];
  return out;
}

words node(const std::uint8_t* in, std::size_t len, std::uint64_t chunk, std::uint32_t root_flag) {
  if (len <= 1024) {
    words cv;
    std::copy(iv, iv + 8, cv.begin());
    const std::size_t blocks = std::max<std::size_t>(1, (len + 63) / 64);
    for (std::size_t b = 0; b < blocks; ++b) {
      const auto n = static_cast<std::uint32_t>(std::min<std::size_t>(64, len - 64 * b));
      const std::uint32_t flags = (b == 0 ? chunk_start : 0) | (b + 1 == blocks ? chunk_end | root_flag : 0);
      cv = compress(cv, in + 64 * b, n, chunk, flags);
    }
    return cv;
  }
  const std::size_t left_chunks = std::bit_floor((len + 1023) / 1024 - 1);
  const words l = node(in, 1024 * left_chunks, chunk, 0);
  const words r = node(in + 1024 * left_chunks, len - 1024 * left_chunks, chunk + left_chunks, 0);
  std::uint8_t block[64];
  for (int i = 0; i < 16; ++i)
    for (int k = 0; k < 4; ++k) block[4 * i + k] = static_cast<std::uint8_t>((i < 8 ? l[i] : r[i - 8]) >> (8 * k));
  words key;
  std::copy(iv, iv + 8, key.begin());
  return compress(key, block, 64, 0, parent | root_flag);
}

std::string hex(std::string_view data) {
  const words w = node(reinterpret_cast<const std::uint8_t*>(data.data()), data.size(), 0, root);
  digest d;
  for (int i = 0; i < 32; ++i) d[i] = static_cast<std::uint8_t>(w[i / 4] >> (8 * (i % 4)));
  return to_hex(d);
}

} // namespace reference

} // namespace

TEST_CASE("blake3 matches the official test vectors on every ISA path this CPU has") {
  // input_len and the first 32 bytes of "hash" from test_vectors/test_vectors.json of
  // github.com/BLAKE3-team/BLAKE3.
  const std::pair<std::size_t, const char*> vectors[] = {
      {0, "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"},
      {1, "2d3adedff11b61f14c886e35afa036736dcd87a74d27b5c1510225d0f592e213"},
      {1023, "10108970eeda3eb932baac1428c7a2163b0e924c9a9e25b35bba72b28f70bd11"},
      {1024, "42214739f095a406f3fc83deb889744ac00df831c10daa55189b5d121c855af7"},
      {1025, "d00278ae47eb27b34faecf67b4fe263f82d5412916c1ffd97c8cb7fb814b8444"},
      {2048, "e776b6028c7cd22a4d0ba182a8bf62205d2ef576467e838ed6f2529b85fba24a"},
      {2049, "5f4d72f40d7a5f82b15ca2b2e44b1de3c2ef86c426c95c1af0b6879522563030"},
      {3072, "b98cb0ff3623be03326b373de6b9095218513e64f1ee2edd2525c7ad1e5cffd2"},
      {3073, "7124b49501012f81cc7f11ca069ec9226cecb8a2c850cfe644e327d22d3e1cd3"},
      {4096, "015094013f57a5277b59d8475c0501042c0b642e531b0a1c8f58d2163229e969"},
      {4097, "9b4052b38f1c5fc8b1f9ff7ac7b27cd242487b3d890d15c96a1c25b8aa0fb995"},
      {5120, "9cadc15fed8b5d854562b26a9536d9707cadeda9b143978f319ab34230535833"},
      {5121, "628bd2cb2004694adaab7bbd778a25df25c47b9d4155a55f8fbd79f2fe154cff"},
      {6144, "3e2e5b74e048f3add6d21faab3f83aa44d3b2278afb83b80b3c35164ebeca205"},
      {6145, "f1323a8631446cc50536a9f705ee5cb619424d46887f3c376c695b70e0f0507f"},
      {7168, "61da957ec2499a95d6b8023e2b0e604ec7f6b50e80a9678b89d2628e99ada77a"},
      {7169, "a003fc7a51754a9b3c7fae0367ab3d782dccf28855a03d435f8cfe74605e7817"},
      {8192, "aae792484c8efe4f19e2ca7d371d8c467ffb10748d8a5a1ae579948f718a2a63"},
      {8193, "bab6c09cb8ce8cf459261398d2e7aef35700bf488116ceb94a36d0f5f1b7bc3b"},
      {16384, "f875d6646de28985646f34ee13be9a576fd515f76b5b0a26bb324735041ddde4"},
      {31744, "62b6960e1a44bcc1eb1a611a8d6235b6b4b78f32e7abc4fb4c6cdcce94895c47"},
      {102400, "bc3e3d41a1146b069abffad3c0d44860cf664390afce4d9661f7902e7943e085"},
  };
  restore_isa restore;
  for (const blake3_isa isa : usable_isas()) {
    REQUIRE(blake3_force_isa(isa));
    for (const auto& [len, want] : vectors) {
      INFO("path " << std::string(blake3_isa_name(isa)) << ", input_len " << len);
      CHECK(blake3_hex(vector_input(len)) == want);
    }
  }
  CHECK(reference::hex(vector_input(102400)) == vectors[std::size(vectors) - 1].second); // the reference itself
}

TEST_CASE("blake3 of \"abc\" and of the empty string, on every ISA path") {
  restore_isa restore;
  for (const blake3_isa isa : usable_isas()) {
    INFO("path " << std::string(blake3_isa_name(isa)));
    REQUIRE(blake3_force_isa(isa));
    CHECK(blake3_hex("abc") == "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85");
    CHECK(blake3_hex("") == "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262");
    CHECK(to_hex(blake3("abc")) == blake3_hex("abc"));
  }
}

TEST_CASE("blake3 ISA paths agree with each other and with a from-the-spec reference on random lengths") {
  std::mt19937_64 rng(20240611);
  std::string data((1 << 20) + 1024 + 64, '\0');
  for (char& c : data) c = static_cast<char>(rng());

  // Random lengths, plus the edges: whole chunks (1024), whole 16-chunk lane groups, and the
  // 256-chunk windows the tree is built in.
  std::vector<std::size_t> lengths;
  std::uniform_int_distribution<std::size_t> any_len(0, 300000);
  for (int i = 0; i < 40; ++i) lengths.push_back(any_len(rng));
  for (const std::size_t unit : {std::size_t{1024}, std::size_t{16 * 1024}, std::size_t{256 * 1024}})
    for (std::size_t k = 1; k * unit <= 300000 && k <= 20; ++k)
      for (const std::size_t len : {k * unit - 1, k * unit, k * unit + 1}) lengths.push_back(len);
  for (std::size_t len = 0; len <= 200; ++len) lengths.push_back(len); // within one chunk: block edges
  // Several windows, so that their CVs are merged on the stack before the last one comes in.
  for (const std::size_t len : {3 * 256 * 1024 + 5, 1 << 20, (1 << 20) + 1024 + 1}) lengths.push_back(len);

  restore_isa restore;
  const std::vector<blake3_isa> isas = usable_isas();
  std::uniform_int_distribution<std::size_t> any_offset(0, 63);
  for (const std::size_t len : lengths) {
    const std::string_view input = std::string_view(data).substr(any_offset(rng), len); // unaligned too
    const std::string want = reference::hex(input);
    for (const blake3_isa isa : isas) {
      REQUIRE(blake3_force_isa(isa));
      INFO("path " << std::string(blake3_isa_name(isa)) << ", length " << len);
      CHECK(blake3_hex(input) == want);
    }
  }
  MESSAGE("blake3: " << lengths.size() << " lengths x " << isas.size() << " ISA paths checked");
}

TEST_CASE("blake3_two_way equals the reference hash, on two threads and on one") {
  std::mt19937_64 rng(77);
  std::string data(3 * 256 * 1024 + 3000, '\0');
  for (char& c : data) c = static_cast<char>(rng());
  const auto one_after_other = [](const std::function<void(int)>& f) {
    f(0);
    f(1);
  };
  const auto two_threads = [](const std::function<void(int)>& f) {
    std::thread other([&] { f(1); });
    f(0);
    other.join();
  };
  // Under the threshold, around it, whole powers of 2 of chunks (the left subtree is then half),
  // one byte past them (a one-byte right subtree), and several 256-chunk windows on each side.
  std::vector<std::size_t> lengths = {0, 1, 1024, 2048, two_way_min_bytes - 1, two_way_min_bytes,
                                      two_way_min_bytes + 1, 64 * 1024, 64 * 1024 + 1, 200 * 1024 + 17,
                                      512 * 1024, 512 * 1024 + 1, data.size()};
  for (int i = 0; i < 12; ++i) lengths.push_back(std::uniform_int_distribution<std::size_t>(0, data.size())(rng));
  for (const std::size_t len : lengths) {
    const std::string_view input = std::string_view(data).substr(0, len);
    const std::string want = reference::hex(input);
    INFO("length " << len);
    CHECK(to_hex(blake3_two_way(input, one_after_other)) == want);
    CHECK(to_hex(blake3_two_way(input, two_threads)) == want);
  }
}

TEST_CASE("blake3_force_isa accepts the portable path anywhere and reports the path in use") {
  restore_isa restore;
  REQUIRE(blake3_force_isa(blake3_isa::portable));
  CHECK(blake3_current_isa() == blake3_isa::portable);
  CHECK(std::string(blake3_isa_name(blake3_isa::avx512)) == "avx512");
  for (const blake3_isa isa : all_isas) {
    if (blake3_force_isa(isa)) CHECK(blake3_current_isa() == isa);
    else CHECK(blake3_current_isa() != isa);
  }
}
