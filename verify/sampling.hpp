#pragma once
// Sampling for verification: decided after the receipt is committed, from a coordinator
// secret, so a provider cannot know in advance which jobs get re-executed.
#include <string_view>

namespace haca::verify {

// HMAC-SHA256(secret, receipt_hash); its first 8 bytes as a big-endian u64, divided by 2^64,
// compared with p. p <= 0 samples nothing, p >= 1 everything.
bool sampled(std::string_view secret, std::string_view receipt_hash_hex, double p);

} // namespace haca::verify
