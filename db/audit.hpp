#pragma once
// An independent check of what the coordinator wrote: receipts re-verified, every block's
// Merkle root recomputed from its receipts, the hash chain and block signatures checked,
// postings summed, and the job table cross-checked against receipts, postings and balances
// (stuck jobs, executed jobs without a receipt, negative accounts, holds over a balance,
// settled jobs never charged, charged jobs never settled). Used by the demo's summary, the
// tests and operators (`haca audit`).
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "proto/error.hpp"

namespace haca::db {

struct audit_options {
  std::string client_id;              // job counts and receipt signatures of this client only ("" = all)
  std::int64_t stuck_after_s = 600;   // a job not in a final state, unchanged this long, is stuck
  std::string coordinator_key;        // hex: every block must be signed by it ("" = trust each row's signer_key)
};

// One kind of trouble: how many (jobs, clients, accounts, blocks, receipts) and the first one.
struct audit_finding {
  std::string kind;      // one of audit_checks()' kinds
  std::int64_t count = 0;
  std::string example;   // the first one found, as a sentence
};

// Every check the audit runs, in report order: {kind, what it looks for}.
struct audit_check {
  std::string_view kind;
  std::string_view description;
};
const std::vector<audit_check>& audit_checks();

struct audit_report {
  std::int64_t jobs = 0;         // of the client (all clients when client_id is empty)
  std::int64_t settled = 0;
  std::int64_t verified = 0;     // receipts whose verdict is 'verified'
  std::int64_t unsampled = 0;
  std::int64_t disputed = 0;
  std::int64_t failed = 0;       // FAILED or EXPIRED
  std::int64_t open = 0;         // jobs (of all clients) not in a final state
  std::int64_t blocks = 0;       // all blocks in the chain
  std::int64_t receipts_checked = 0;
  bool receipts_valid = true;
  bool chain_valid = true;
  bool postings_balanced = true; // all postings, and each job's, sum to zero; balances match postings
  std::vector<audit_finding> findings; // every kind of trouble found, in audit_checks() order
  std::string problem;           // the first finding's example, if any

  bool ok() const { return findings.empty(); }
  const audit_finding* find(std::string_view kind) const;
};

// The chain, the ledger and the cross-checks always cover the whole database; client_id only
// narrows the job counts and the receipt signatures checked.
result<audit_report> audit(const std::string& url, const audit_options& options);
result<audit_report> audit(const std::string& url, const std::string& client_id);
// Jobs of the client in a final state (SETTLED, FAILED, EXPIRED, CANCELLED).
result<std::int64_t> count_final(const std::string& url, const std::string& client_id);

} // namespace haca::db
