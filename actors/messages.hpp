#pragma once
// Every message type and atom the coordinator's actors exchange, in one place.
// The types never leave the process (nodes and clients speak the ZeroMQ protocol, not CAF),
// so they are announced as local-only message types rather than given serializers.
#include <cstdint>
#include <string>
#include <vector>

#include <caf/all.hpp>

#include "db/records.hpp"
#include "db/store.hpp"
#include "proto/commands.hpp"
#include "scheduler/match.hpp"

namespace haca::actors {

using tick_atom = caf::atom_constant<caf::atom("tick")>;
using inbound_atom = caf::atom_constant<caf::atom("inbound")>;
using note_atom = caf::atom_constant<caf::atom("note")>;        // fire-and-forget store write
using pull_atom = caf::atom_constant<caf::atom("pull")>;        // scheduler asks job_queue for work
using ready_atom = caf::atom_constant<caf::atom("ready")>;      // job_queue: jobs are waiting
using credit_atom = caf::atom_constant<caf::atom("credit")>;    // provider_proxy: READY n
using assign_atom = caf::atom_constant<caf::atom("assign")>;
using unplaced_atom = caf::atom_constant<caf::atom("unplaced")>; // a pulled job found no provider
using requeue_atom = caf::atom_constant<caf::atom("requeue")>;   // provider lost or FAIL
using executed_atom = caf::atom_constant<caf::atom("executed")>;
using lost_atom = caf::atom_constant<caf::atom("lost")>;
using final_atom = caf::atom_constant<caf::atom("final")>;      // a job is ready to settle
using settled_atom = caf::atom_constant<caf::atom("settled")>;
using peers_atom = caf::atom_constant<caf::atom("peers")>;

enum class port_kind : std::uint8_t { client = 'c', node = 'n' };

// A decoded message from a socket, with the ZeroMQ identity of its sender.
struct inbound {
  port_kind port = port_kind::client;
  std::string identity;
  proto::message msg;
};

// A job handed from job_queue to the scheduler and on to a provider.
struct dispatch_job {
  proto::job_order order;       // job id, attempt, model, price (set by the scheduler), input
  std::string input_hash;
  std::int64_t max_price = 0;
};

// A DONE whose receipt the provider_proxy checked.
struct executed_job {
  proto::job_done done;
};

// A job on its way to settlement, with the verdict that finalized it.
struct final_job {
  std::int64_t job_id = 0;
  std::string client_id;
  verify::receipt receipt;
  std::string verdict; // verified | unsampled | mismatch
};

using store_reply = result<db::answer>;

// The actors of one coordinator, handed to each after they are all spawned.
struct peers {
  caf::actor store;
  caf::actor job_queue;
  caf::actor scheduler;
  caf::actor verifier_pool;
  caf::actor settlement;
};

inline constexpr auto store_timeout = std::chrono::seconds(10);
inline constexpr auto local_timeout = std::chrono::seconds(5);

std::int64_t now_us();

} // namespace haca::actors

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(haca::actors::inbound)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(haca::actors::dispatch_job)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::vector<haca::actors::dispatch_job>)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(haca::actors::executed_job)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(haca::actors::final_job)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(haca::actors::store_reply)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(haca::actors::peers)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(haca::db::operation)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(haca::db::startup_state)

namespace haca::actors {

// An executed job on its way to the verifier pool.
struct to_verify {
  final_job job;
  std::string tier;
  kernels::tensor input;
};

} // namespace haca::actors

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(haca::actors::to_verify)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::vector<haca::actors::final_job>)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(haca::scheduler::provider_view)
