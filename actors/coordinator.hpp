#pragma once
// Spawning the coordinator's actors. Each actor is a thin shell: the decisions it takes live in
// scheduler/, market/ and verify/.
#include <map>
#include <memory>
#include <string>

#include <caf/all.hpp>

#include "actors/messages.hpp"
#include "kernels/model.hpp"
#include "verify/signing.hpp"

namespace haca::actors {

struct coordinator_config {
  std::map<std::string, int> model_input_dims; // model hash -> input_dim
  int max_rows = 64;
  std::size_t max_queue = 100000;
  int max_attempts = 3;
  std::int64_t faucet = 0;                  // micro-units granted to a new client id; 0 = none
  std::int64_t default_deadline_ms = 600000;
  int heartbeat_ms = 500;
  double sample_rate = 0.1;
  std::string sampling_secret;
  int fee_bps = 500;
  std::size_t batch_size = 256;
  int batch_ms = 200;
  verify::key_pair key;                     // signs settlement blocks
  db::startup_state ledger_head;
};

caf::actor spawn_store(caf::actor_system& sys, std::shared_ptr<db::store> db);
caf::actor spawn_job_queue(caf::actor_system& sys, const coordinator_config& cfg);
caf::actor spawn_scheduler(caf::actor_system& sys, const coordinator_config& cfg);
caf::actor spawn_verifier_pool(caf::actor_system& sys, const coordinator_config& cfg);
caf::actor spawn_settlement_batcher(caf::actor_system& sys, const coordinator_config& cfg);
// One per connected provider; spawned by the scheduler.
caf::actor spawn_provider_proxy(caf::actor_system& sys, const peers& p, std::string identity, proto::capabilities caps,
                                int heartbeat_ms);

} // namespace haca::actors
