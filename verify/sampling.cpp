#include "verify/sampling.hpp"

#include <sodium.h>

#include <cstdint>

namespace haca::verify {

bool sampled(std::string_view secret, std::string_view receipt_hash_hex, double p) {
  if (!(p > 0.0)) return false; // also NaN
  if (p >= 1.0) return true;
  static const int once = sodium_init();
  (void)once;
  // HMAC-SHA256 accepts any key length through the init/update/final interface.
  unsigned char mac[crypto_auth_hmacsha256_BYTES];
  crypto_auth_hmacsha256_state st;
  crypto_auth_hmacsha256_init(&st, reinterpret_cast<const unsigned char*>(secret.data()), secret.size());
  crypto_auth_hmacsha256_update(&st, reinterpret_cast<const unsigned char*>(receipt_hash_hex.data()),
                                receipt_hash_hex.size());
  crypto_auth_hmacsha256_final(&st, mac);
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | mac[i];
  // v / 2^64 < p, computed without rounding v up to 2^64.
  const double x = static_cast<double>(v >> 11) / static_cast<double>(std::uint64_t{1} << 53);
  return x < p;
}

} // namespace haca::verify
