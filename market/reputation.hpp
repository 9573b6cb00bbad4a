#pragma once
// A provider's reputation, derived from its verdict history alone: the jobs a verifier
// re-executed and found equal (verified) and the disputes it lost (a verifier's re-execution
// differed). Permille: 1000 for a record without a lost dispute; each lost dispute weighs as
// much as ten verified jobs, so a caught cheat costs much more than one honest job earns.
#include <cstdint>

namespace haca::market {

struct verdict_record {
  std::int64_t verified = 0;
  std::int64_t disputes_lost = 0;
};

// 1000 * (verified + 1) / (verified + 1 + 10 * disputes_lost), rounded down: a new provider
// has 1000; one lost dispute and nothing verified, 90; one lost dispute after 99 verified, 909.
int reputation(const verdict_record& r);

} // namespace haca::market
