#pragma once
// Matching a job to a provider: a pure function over a snapshot of providers. It returns the
// choice, or a reason when nothing fits.
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace haca::scheduler {

struct provider_view {
  std::string key;                // provider public key
  std::string device;             // "cpu", "cuda"
  std::set<std::string> models;   // model hashes it has
  int credit = 0;                 // jobs it asked for (READY n) minus jobs in flight
  std::int64_t price = 0;         // micro-units per job
  int reputation = 1000;          // permille, 1000 = perfect
};

struct job_needs {
  std::string model_hash;
  std::string device;             // "" = any
  std::int64_t max_price = 0;
  int min_reputation = 0;         // permille
};

struct match_result {
  std::optional<std::string> provider_key;
  std::string reason;             // why nothing fits, when provider_key is empty
};

// Cheapest capable provider with credit, price <= max_price and reputation >= the floor;
// ties go to the higher reputation, then the most credit, then the smaller key (deterministic).
match_result match(const job_needs& job, const std::vector<provider_view>& providers);

} // namespace haca::scheduler
