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

// The X25519 (CurveZMQ) keys of an Ed25519 key pair, derived from it (libsodium's
// crypto_sign_ed25519_*_to_curve25519), so one key names a node or the coordinator on both
// layers: a connection's CURVE key proves who holds the Ed25519 key its HELLO names.
std::string curve_public_hex(std::string_view ed25519_public_hex); // "" when not a valid key
std::string curve_secret(const key_pair& key);                     // 32 raw bytes

} // namespace haca::verify
