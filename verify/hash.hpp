#pragma once
// SHA-256 and hex helpers (libsodium). Hashes travel and are stored as 64 lowercase hex chars.
#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "proto/error.hpp"

namespace haca::verify {

using digest = std::array<std::uint8_t, 32>;

digest sha256(std::string_view data);
std::string sha256_hex(std::string_view data);
std::string to_hex(std::string_view bytes);
std::string to_hex(const digest& d);
// Fails on odd length or a non-hex character.
result<std::string> from_hex(std::string_view hex);
bool is_hash_hex(std::string_view s); // 64 lowercase hex chars

} // namespace haca::verify
