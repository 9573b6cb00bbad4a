#include "verify/receipt.hpp"

#include "verify/hash.hpp"

namespace haca::verify {

std::string receipt_signing_bytes(const receipt& r) {
  std::string s = "haca-receipt-v1\n";
  s += "job_id=" + std::to_string(r.job_id) + "\n";
  s += "model_hash=" + r.model_hash + "\n";
  s += "input_hash=" + r.input_hash + "\n";
  s += "output_hash=" + r.output_hash + "\n";
  s += "trace_root=" + r.trace_root + "\n";
  s += "provider_key=" + r.provider_key + "\n";
  s += "price=" + std::to_string(r.price) + "\n";
  s += "attempt=" + std::to_string(r.attempt) + "\n";
  s += "started_at_us=" + std::to_string(r.started_at_us) + "\n";
  s += "finished_at_us=" + std::to_string(r.finished_at_us) + "\n";
  return s;
}

std::string receipt_hash(const receipt& r) { return sha256_hex(receipt_signing_bytes(r)); }

void sign_receipt(receipt& r, const key_pair& key) {
  r.provider_key = key.public_key_hex;
  r.signature = sign_hex(key, receipt_signing_bytes(r));
}

bool verify_receipt(const receipt& r) {
  return verify_signature_hex(r.provider_key, receipt_signing_bytes(r), r.signature);
}

std::string verdict_signing_bytes(const verdict& v) {
  std::string s = "haca-verdict-v1\n";
  s += "job_id=" + std::to_string(v.job_id) + "\n";
  s += "model_hash=" + v.model_hash + "\n";
  s += "input_hash=" + v.input_hash + "\n";
  s += "output_hash=" + v.output_hash + "\n";
  s += "trace_root=" + v.trace_root + "\n";
  s += "layer_hashes=";
  for (std::size_t i = 0; i < v.layer_hashes.size(); ++i)
    s += (i ? "," : "") + v.layer_hashes[i];
  s += "\n";
  s += "verifier_key=" + v.verifier_key + "\n";
  return s;
}

void sign_verdict(verdict& v, const key_pair& key) {
  v.verifier_key = key.public_key_hex;
  v.signature = sign_hex(key, verdict_signing_bytes(v));
}

bool verify_verdict(const verdict& v) {
  return verify_signature_hex(v.verifier_key, verdict_signing_bytes(v), v.signature);
}

std::string block_signing_bytes(const block& b) {
  std::string s = "haca-block-v1\n";
  s += "height=" + std::to_string(b.height) + "\n";
  s += "prev_hash=" + b.prev_hash + "\n";
  s += "batch_root=" + b.batch_root + "\n";
  s += "receipts=" + std::to_string(b.receipts) + "\n";
  s += "total_amount=" + std::to_string(b.total_amount) + "\n";
  s += "created_at_us=" + std::to_string(b.created_at_us) + "\n";
  s += "signer_key=" + b.signer_key + "\n";
  return s;
}

std::string block_hash(const block& b) { return sha256_hex(block_signing_bytes(b)); }

void sign_block(block& b, const key_pair& key) {
  b.signer_key = key.public_key_hex;
  b.signature = sign_hex(key, block_signing_bytes(b));
}

bool verify_block(const block& b) { return verify_signature_hex(b.signer_key, block_signing_bytes(b), b.signature); }

std::string inclusion_problem(const receipt& r, std::int32_t index, const std::vector<merkle_step>& path,
                              const block& b, const std::string& coordinator_key) {
  if (!verify_receipt(r))
    return "the receipt's signature does not verify against its provider_key";
  if (index < 0 || index >= b.receipts)
    return "index " + std::to_string(index) + " is outside the block's " + std::to_string(b.receipts) + " receipts";
  if (!verify_merkle_proof(receipt_hash(r), path, b.batch_root))
    return "the Merkle path from the receipt's hash does not lead to the block's batch_root";
  if (b.signer_key != coordinator_key)
    return "the block is signed by " + b.signer_key.substr(0, 16) + "..., not by the coordinator key " +
           coordinator_key.substr(0, 16) + "...";
  if (!verify_block(b))
    return "the block's signature does not verify";
  return {};
}

} // namespace haca::verify
