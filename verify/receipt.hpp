#pragma once
// The signed receipt a provider returns with every result, and the signed settlement block.
// The exact bytes that are signed are specified in docs/PROTOCOL.md ("Receipts").
#include <cstdint>
#include <string>
#include <vector>

#include "verify/merkle.hpp"
#include "verify/signing.hpp"

namespace haca::verify {

struct receipt {
  std::int64_t job_id = 0;
  std::string model_hash;
  std::string input_hash;
  std::string output_hash;
  std::string trace_root;
  std::string provider_key; // hex Ed25519 public key of the signer
  std::int64_t price = 0;   // micro-units
  std::int32_t attempt = 0;
  std::int64_t started_at_us = 0;  // unix microseconds
  std::int64_t finished_at_us = 0;
  std::string signature; // hex Ed25519 signature over receipt_signing_bytes
};

// "haca-receipt-v1\n" then one "key=value\n" line per field, in the struct's order, without
// the signature.
std::string receipt_signing_bytes(const receipt& r);
std::string receipt_hash(const receipt& r); // SHA-256 hex of the signing bytes
void sign_receipt(receipt& r, const key_pair& key); // sets provider_key and signature
bool verify_receipt(const receipt& r);              // signature checks against provider_key

// A verifier's signed account of its own re-execution of a job. It is made without seeing the
// provider's receipt (VERIFY carries the model and the input only), so it cannot be copied
// from it; the coordinator compares the two afterwards.
struct verdict {
  std::int64_t job_id = 0;
  std::string model_hash;
  std::string input_hash;
  std::string output_hash;
  std::string trace_root;                // merkle_root(layer_hashes)
  std::vector<std::string> layer_hashes; // one per trace layer, for dispute bisection
  std::string verifier_key;              // hex Ed25519 public key of the signer
  std::string signature;                 // hex Ed25519 signature over verdict_signing_bytes
};

// "haca-verdict-v1\n" then one "key=value\n" line per field in the struct's order, without the
// signature; layer_hashes is one line with the hashes joined by ','.
std::string verdict_signing_bytes(const verdict& v);
void sign_verdict(verdict& v, const key_pair& key); // sets verifier_key and signature
bool verify_verdict(const verdict& v);              // signature checks against verifier_key

struct block {
  std::int64_t height = 0;
  std::string prev_hash;  // block_hash of height-1; 64 zeros for height 0
  std::string batch_root; // Merkle root of the batch's receipt hashes, in batch order
  std::int32_t receipts = 0;
  std::int64_t total_amount = 0; // sum of the prices settled
  std::int64_t created_at_us = 0;
  std::string signer_key;
  std::string signature; // over block_signing_bytes
};

std::string block_signing_bytes(const block& b); // "haca-block-v1\n" + key=value lines
std::string block_hash(const block& b);          // SHA-256 hex of the signing bytes
void sign_block(block& b, const key_pair& key);
bool verify_block(const block& b);

// Why a receipt's inclusion in a block does not hold, or "" when it does: the receipt's
// signature, the path from its hash to the block's batch root, the block's place for it, and
// the block's signature by coordinator_key (pinned by the one who checks, never taken from the
// block). Offline: no network, no database.
std::string inclusion_problem(const receipt& r, std::int32_t index, const std::vector<merkle_step>& path,
                              const block& b, const std::string& coordinator_key);

} // namespace haca::verify
