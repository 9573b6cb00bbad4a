#pragma once
// An independent check of what the coordinator wrote: receipts re-verified, every block's
// Merkle root recomputed from its receipts, the hash chain and block signatures checked,
// postings summed. Used by the demo's summary, the tests and operators.
#include <cstdint>
#include <string>

#include "proto/error.hpp"

namespace haca::db {

struct audit_report {
  std::int64_t jobs = 0;         // of the client (all clients when client_id is empty)
  std::int64_t settled = 0;
  std::int64_t verified = 0;     // receipts whose verdict is 'verified'
  std::int64_t unsampled = 0;
  std::int64_t disputed = 0;
  std::int64_t failed = 0;       // FAILED or EXPIRED
  std::int64_t blocks = 0;       // all blocks in the chain
  std::int64_t receipts_checked = 0;
  bool receipts_valid = true;
  bool chain_valid = true;
  bool postings_balanced = true; // all postings, and each job's, sum to zero
  std::string problem;           // the first problem found, if any
};

result<audit_report> audit(const std::string& url, const std::string& client_id);
// Jobs of the client in a final state (SETTLED, FAILED, EXPIRED, CANCELLED).
result<std::int64_t> count_final(const std::string& url, const std::string& client_id);

} // namespace haca::db
