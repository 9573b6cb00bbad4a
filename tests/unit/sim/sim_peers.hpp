#pragma once
// The simulated outside world of the coordinator: clients, providers and verifiers as data,
// and the deterministic "model" they all compute (so an honest verifier agrees with an honest
// provider bit for bit). Keys come from the seed, never from the OS.
#include <sodium.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/records.hpp"
#include "kernels/ops.hpp"
#include "proto/commands.hpp"
#include "verify/hash.hpp"
#include "verify/merkle.hpp"
#include "verify/signing.hpp"

namespace haca::sim {

using core::time_us;

// A key pair from 32 seed bytes drawn from the simulation's generator.
inline verify::key_pair key_from_seed(std::uint64_t a, std::uint64_t b, std::uint64_t c, std::uint64_t d) {
  static const int once = sodium_init();
  (void)once;
  unsigned char seed[crypto_sign_ed25519_SEEDBYTES];
  const std::uint64_t words[4] = {a, b, c, d};
  for (int i = 0; i < 32; ++i)
    seed[i] = static_cast<unsigned char>(words[i / 8] >> (8 * (i % 8)));
  unsigned char pk[crypto_sign_ed25519_PUBLICKEYBYTES];
  unsigned char sk[crypto_sign_ed25519_SECRETKEYBYTES];
  crypto_sign_ed25519_seed_keypair(pk, sk, seed);
  verify::key_pair k;
  k.public_key_hex = verify::to_hex(std::string_view(reinterpret_cast<const char*>(pk), sizeof pk));
  k.secret_key.assign(reinterpret_cast<const char*>(sk), sizeof sk);
  return k;
}

inline constexpr int sim_classes = 10;

// The "model": i8 [rows, 10], each row from a hash of the model and the input row. A cheater
// (or a lying verifier) passes a salt and gets different, equally well-formed bytes.
inline kernels::tensor sim_output(const std::string& model, const kernels::tensor& input, const std::string& salt = {}) {
  kernels::tensor out;
  out.type = kernels::dtype::i8;
  const std::int64_t rows = input.shape.size() == 2 ? input.shape[0] : 1;
  const std::int64_t cols = input.shape.size() == 2 ? input.shape[1] : 0;
  out.shape = {rows, sim_classes};
  out.data.resize(static_cast<std::size_t>(rows * sim_classes));
  for (std::int64_t r = 0; r < rows; ++r) {
    std::string buf = model + salt;
    const auto off = static_cast<std::size_t>(r * cols);
    if (off + static_cast<std::size_t>(cols) <= input.data.size())
      buf.append(input.data, off, static_cast<std::size_t>(cols));
    const auto d = verify::sha256(buf);
    for (int c = 0; c < sim_classes; ++c)
      out.data[static_cast<std::size_t>(r * sim_classes + c)] = static_cast<char>(d[static_cast<std::size_t>(c)]);
  }
  return out;
}

// Two "trace layers" per run; the trace root is their Merkle root, as in a real receipt.
inline std::vector<std::string> sim_layer_hashes(const std::string& model, const kernels::tensor& output) {
  return {verify::sha256_hex("sim-layer-0\n" + model + "\n" + output.data),
          verify::sha256_hex("sim-layer-1\n" + model + "\n" + output.data)};
}

inline std::string sim_trace_root(const std::string& model, const kernels::tensor& output) {
  return verify::merkle_root(sim_layer_hashes(model, output));
}

inline std::vector<std::int32_t> sim_classes_of(const kernels::tensor& output) {
  const int rows = static_cast<int>(output.shape.empty() ? 0 : output.shape[0]);
  std::vector<std::int32_t> classes(static_cast<std::size_t>(rows));
  if (rows > 0)
    kernels::argmax_rows(output.i8(), rows, static_cast<int>(output.shape[1]), classes.data());
  return classes;
}

// ---- clients ----

struct sim_request {
  proto::submit_request req;
  bool started = false;
  bool answered = false;               // a RESULT or a final ERROR
  std::string answer;                  // "RESULT" or the final ERROR code
  std::optional<std::int64_t> job_id;  // from the first ACK (or RESULT)
  std::optional<proto::job_result> result;
  std::string result_receipt_hash;
  bool retry_pending = false;          // queue_full / unavailable: sent again later
  int sends = 0;
};

struct sim_client {
  int index = 0;
  std::string id;                      // client_id
  std::string identity;                // ZeroMQ routing identity; new after some reconnects
  int gen = 0;
  std::vector<sim_request> reqs;
  std::map<std::string, std::size_t> by_request;
  std::map<std::string, sim_request> reruns; // the coordinator's re-runs of its disputed jobs ("rerun:<job id>")
  std::size_t next = 0;                // next request to start
  int window = 1;                      // requests in flight at most
  time_us resend_us = 1000000;
  bool stop_new = false;               // calm phase: only finish what is started

  int outstanding() const {
    int n = 0;
    for (std::size_t i = 0; i < next; ++i)
      if (reqs[i].started && !reqs[i].answered)
        ++n;
    return n;
  }
};

// ---- providers and verifiers ----

struct sim_node {
  int index = 0;
  bool provider = true;
  std::string name;
  verify::key_pair key;
  std::string identity;
  int gen = 0;
  std::uint64_t session = 0;           // bumped at each (re)connect: stops the old connection's timers
  std::uint64_t life = 0;              // bumped at each death: the work of an earlier life is lost
  std::vector<std::string> models;
  core::micros price = 0;
  int credit = 1;
  bool alive = true;
  bool welcomed = false;
  time_us last_heard = 0;
  int heartbeat_ms = 200;
  // behaviour
  double p_slow = 0;                   // a job takes longer than the assignment timeout
  double p_fail = 0;                   // FAIL instead of DONE
  double p_cheat = 0;                  // a wrong output with a consistent, signed receipt
  double p_forge = 0;                  // a receipt that does not check (bad signature, field, classes)
  double p_lie = 0;                    // verifier: the opposite verdict
  time_us die_at = 0;                  // 0 = never
  bool dies_silently = true;

  proto::capabilities caps(time_us now) const {
    proto::capabilities c;
    c.role = provider ? "provider" : "verifier";
    c.name = name;
    c.public_key = key.public_key_hex;
    c.device = "cpu";
    c.backends = {"reference"};
    c.models = models;
    c.price = provider ? price : 0;
    c.stake = 0;
    c.memory_bytes = std::int64_t{1} << 30;
    c.int8 = true;
    c.timestamp_us = now;
    return c;
  }
};

} // namespace haca::sim
