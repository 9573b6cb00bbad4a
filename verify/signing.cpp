#include "verify/signing.hpp"

#include <sodium.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "verify/hash.hpp"

namespace haca::verify {

namespace {
void ensure_sodium() {
  static const int once = sodium_init();
  (void)once;
}

key_pair from_secret(const std::string& sk) {
  key_pair k;
  k.secret_key = sk;
  unsigned char pk[crypto_sign_ed25519_PUBLICKEYBYTES];
  crypto_sign_ed25519_sk_to_pk(pk, reinterpret_cast<const unsigned char*>(sk.data()));
  k.public_key_hex = to_hex(std::string_view(reinterpret_cast<const char*>(pk), sizeof pk));
  return k;
}
} // namespace

key_pair generate_key_pair() {
  ensure_sodium();
  unsigned char pk[crypto_sign_ed25519_PUBLICKEYBYTES];
  unsigned char sk[crypto_sign_ed25519_SECRETKEYBYTES];
  crypto_sign_ed25519_keypair(pk, sk);
  key_pair k;
  k.public_key_hex = to_hex(std::string_view(reinterpret_cast<const char*>(pk), sizeof pk));
  k.secret_key.assign(reinterpret_cast<const char*>(sk), sizeof sk);
  sodium_memzero(sk, sizeof sk);
  return k;
}

result<key_pair> load_or_create_key(const std::string& path) {
  ensure_sodium();
  try {
    namespace fs = std::filesystem;
    std::error_code ec;
    if (fs::exists(path, ec)) {
      std::ifstream in(path);
      std::string line;
      if (!in || !std::getline(in, line))
        return make_error(errc::io_error, "cannot read key file " + path);
      while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) line.pop_back();
      auto sk = from_hex(line);
      if (!sk || sk->size() != crypto_sign_ed25519_SECRETKEYBYTES)
        return make_error(errc::io_error, "key file " + path + " does not hold 128 hex chars (a 64-byte Ed25519 "
                                          "secret key); move it away to create a new key");
      auto k = from_secret(*sk);
      // The stored form is seed||pk: a file whose halves disagree was edited or corrupted.
      unsigned char pk_stored[crypto_sign_ed25519_PUBLICKEYBYTES];
      std::memcpy(pk_stored, sk->data() + 32, sizeof pk_stored);
      unsigned char seed_pk[crypto_sign_ed25519_PUBLICKEYBYTES], seed_sk[crypto_sign_ed25519_SECRETKEYBYTES];
      crypto_sign_ed25519_seed_keypair(seed_pk, seed_sk, reinterpret_cast<const unsigned char*>(sk->data()));
      sodium_memzero(seed_sk, sizeof seed_sk);
      if (std::memcmp(seed_pk, pk_stored, sizeof seed_pk) != 0)
        return make_error(errc::io_error, "key file " + path + " is inconsistent (public half does not match the seed)");
      return k;
    }
    const fs::path p(path);
    if (p.has_parent_path()) {
      fs::create_directories(p.parent_path(), ec);
      if (ec) return make_error(errc::io_error, "cannot create directory " + p.parent_path().string() + ": " + ec.message());
    }
    key_pair k = generate_key_pair();
    const std::string text = to_hex(k.secret_key) + "\n";
    const mode_t old = ::umask(077);
    std::FILE* f = std::fopen(path.c_str(), "wx");
    ::umask(old);
    if (!f) return make_error(errc::io_error, "cannot create key file " + path + ": " + std::strerror(errno));
    const bool written = std::fwrite(text.data(), 1, text.size(), f) == text.size();
    const bool closed = std::fclose(f) == 0;
    ::chmod(path.c_str(), 0600);
    if (!written || !closed) return make_error(errc::io_error, "cannot write key file " + path);
    return k;
  } catch (const std::exception& e) {
    return make_error(errc::io_error, "key file " + path + ": " + e.what());
  }
}

std::string sign_hex(const key_pair& key, std::string_view message) {
  ensure_sodium();
  if (key.secret_key.size() != crypto_sign_ed25519_SECRETKEYBYTES) return {};
  unsigned char sig[crypto_sign_ed25519_BYTES];
  crypto_sign_ed25519_detached(sig, nullptr, reinterpret_cast<const unsigned char*>(message.data()), message.size(),
                               reinterpret_cast<const unsigned char*>(key.secret_key.data()));
  return to_hex(std::string_view(reinterpret_cast<const char*>(sig), sizeof sig));
}

std::string curve_public_hex(std::string_view ed25519_public_hex) {
  auto pk = from_hex(ed25519_public_hex);
  if (!pk || pk->size() != crypto_sign_PUBLICKEYBYTES)
    return {};
  unsigned char curve[crypto_scalarmult_curve25519_BYTES];
  if (crypto_sign_ed25519_pk_to_curve25519(curve, reinterpret_cast<const unsigned char*>(pk->data())) != 0)
    return {};
  return to_hex(std::string_view(reinterpret_cast<const char*>(curve), sizeof curve));
}

std::string curve_secret(const key_pair& key) {
  unsigned char curve[crypto_scalarmult_curve25519_BYTES];
  crypto_sign_ed25519_sk_to_curve25519(curve, reinterpret_cast<const unsigned char*>(key.secret_key.data()));
  std::string out(reinterpret_cast<const char*>(curve), sizeof curve);
  sodium_memzero(curve, sizeof curve);
  return out;
}

bool verify_signature_hex(std::string_view public_key_hex, std::string_view message,
                          std::string_view signature_hex) {
  ensure_sodium();
  auto pk = from_hex(public_key_hex);
  auto sig = from_hex(signature_hex);
  if (!pk || !sig || pk->size() != crypto_sign_ed25519_PUBLICKEYBYTES || sig->size() != crypto_sign_ed25519_BYTES)
    return false;
  return crypto_sign_ed25519_verify_detached(reinterpret_cast<const unsigned char*>(sig->data()),
                                             reinterpret_cast<const unsigned char*>(message.data()), message.size(),
                                             reinterpret_cast<const unsigned char*>(pk->data())) == 0;
}

} // namespace haca::verify
