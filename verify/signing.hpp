#pragma once
// Ed25519 keys and signatures (libsodium). Public keys and signatures travel as hex.
#include <string>
#include <string_view>

#include "proto/error.hpp"

namespace haca::verify {

struct key_pair {
  std::string public_key_hex; // 32 bytes as 64 hex chars
  std::string secret_key;     // 64 raw bytes (libsodium's seed||pk form)
};

key_pair generate_key_pair();
// Loads a key file (hex of the 64-byte secret key, one line); creates it (mode 0600) if absent.
result<key_pair> load_or_create_key(const std::string& path);
std::string sign_hex(const key_pair& key, std::string_view message);
bool verify_signature_hex(std::string_view public_key_hex, std::string_view message,
                          std::string_view signature_hex);

} // namespace haca::verify
