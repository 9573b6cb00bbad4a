#pragma once
// Actors inside the node processes: gpu_worker (provider side, one per device) runs jobs and
// signs receipts; verify_worker (verifier side) re-executes sampled jobs. Both are detached:
// inference blocks. Replies go to the coordinator through net::node_session::post.
#include <map>
#include <memory>
#include <string>

#include <caf/all.hpp>

#include "kernels/model.hpp"
#include "proto/commands.hpp"
#include "verify/signing.hpp"

namespace haca::actors {

using model_library = std::map<std::string, kernels::model>; // by hash

struct worker_config {
  std::shared_ptr<const model_library> models;
  verify::key_pair key;
  const kernels::backend* backend = &kernels::reference_backend();
  int max_rows = 256;
  int fault_delay_ms = 0; // test hook: sleep before each job, to hold jobs in flight
  // Test switch: the share of jobs whose result is corrupted at a random layer and signed
  // anyway (a provider's --cheat-rate, a verifier's --lie-rate); each is logged as a warning.
  double corrupt_rate = 0;
};

caf::actor spawn_gpu_worker(caf::actor_system& sys, worker_config cfg);
caf::actor spawn_verify_worker(caf::actor_system& sys, worker_config cfg);

} // namespace haca::actors

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(haca::proto::job_order)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(haca::proto::verify_task)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(haca::proto::probe_request)
