#pragma once
// What the unit tests of the three cores share: a fixed clock and really signed receipts.
#include <cstdint>
#include <string>
#include <vector>

#include "core/records.hpp"
#include "kernels/model.hpp"
#include "verify/hash.hpp"
#include "verify/merkle.hpp"
#include "verify/receipt.hpp"
#include "verify/signing.hpp"

namespace haca::test {

constexpr core::time_us t0 = 1'700'000'000'000'000;
constexpr core::time_us ms = 1000;

// The activation trace layer `layer` of job_id's honest run outputs (i8 [1, width]), and the
// trace layer hashes of that run: their layer hashes (the receipt's trace root is their root).
inline kernels::tensor layer_activation(std::int64_t job_id, int layer) {
  kernels::tensor t;
  t.type = kernels::dtype::i8;
  t.data = "layer " + std::to_string(layer) + " of " + std::to_string(job_id);
  t.shape = {1, static_cast<std::int64_t>(t.data.size())};
  return t;
}
inline std::vector<std::string> trace_layers(std::int64_t job_id) {
  return {kernels::layer_hash(layer_activation(job_id, 0).data), kernels::layer_hash(layer_activation(job_id, 1).data)};
}

// A receipt for job_id (attempt 1) signed by provider, with hashes that differ per job.
inline verify::receipt signed_receipt(std::int64_t job_id, const verify::key_pair& provider,
                                      std::int64_t price = 1000) {
  verify::receipt r;
  r.job_id = job_id;
  r.model_hash = verify::sha256_hex("model");
  r.input_hash = verify::sha256_hex("input " + std::to_string(job_id));
  r.output_hash = verify::sha256_hex("output " + std::to_string(job_id));
  r.trace_root = verify::merkle_root(trace_layers(job_id));
  r.price = price;
  r.attempt = 1;
  r.started_at_us = t0;
  r.finished_at_us = t0 + 1234;
  verify::sign_receipt(r, provider);
  return r;
}

// The records of one kind among a step's effects, in order.
template <class T>
std::vector<T> records_of(const core::effects& e) {
  std::vector<T> out;
  for (const auto& r : e.records)
    if (const auto* x = std::get_if<T>(&r))
      out.push_back(*x);
  return out;
}

} // namespace haca::test
