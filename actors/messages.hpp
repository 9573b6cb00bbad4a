#pragma once
// Every message type and atom the coordinator's actors exchange, in one place. The types never
// leave the process (nodes and clients speak the ZeroMQ protocol, not CAF), so they are
// announced as local-only message types rather than given serializers.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <caf/all.hpp>

#include "core/events.hpp"
#include "proto/message.hpp"

namespace haca::actors {

using tick_atom = caf::atom_constant<caf::atom("tick")>;
using inbound_atom = caf::atom_constant<caf::atom("inbound")>;
using persist_atom = caf::atom_constant<caf::atom("persist")>;     // records for the store
using committed_atom = caf::atom_constant<caf::atom("committed")>; // the store's answer
using handoff_atom = caf::atom_constant<caf::atom("handoff")>;     // from one core to the next
using lookup_atom = caf::atom_constant<caf::atom("lookup")>;       // STATUS, for the reader
using drain_atom = caf::atom_constant<caf::atom("drain")>;         // SIGTERM: finish what is owed
using sync_atom = caf::atom_constant<caf::atom("sync")>;           // store: answer once all before is done
using farewell_atom = caf::atom_constant<caf::atom("farewell")>;   // say DISCONNECT to the nodes
using peers_atom = caf::atom_constant<caf::atom("peers")>;
using admin_atom = caf::atom_constant<caf::atom("admin")>;         // an operator's action (admin API)

// A decoded message from a socket, with the ZeroMQ identity of its sender.
struct inbound {
  core::port from = core::port::client;
  std::string identity;
  proto::message msg;
  std::string peer_key; // the connection's CURVE public key (hex), from ZAP: a node's key, a client's account
};

using records = std::vector<core::record>;
using outcomes = std::vector<core::outcome>;
using executed_jobs = std::vector<core::executed_job>;
using judged_jobs = std::vector<core::judged_job>;
using settled_jobs = std::vector<core::settled_job>;
using admitted_verifiers = std::vector<core::node_hello>; // execution -> verification
using left_nodes = std::vector<core::node_left>;          // verification -> execution
using admin_actions = std::vector<core::admin_action>;    // execution -> verification and settlement

class metrics;

// The actors of one coordinator, handed to each after they are all spawned, and the metrics
// they write.
struct peers {
  caf::actor store;
  caf::actor reader;
  caf::actor job_queue;
  caf::actor verifier_pool;
  caf::actor settlement;
  std::shared_ptr<metrics> stats;
};

// Inbound messages the gateway has handed to an actor and that it has not handled yet: the
// gateway stops reading a port while its consumer is this far behind (backpressure instead of
// an unbounded mailbox).
struct inbound_backlog {
  std::atomic<std::int64_t> pending{0};
};

inline constexpr auto store_timeout = std::chrono::seconds(10);

// The identity an admin API request waits under (core_adapter::await_answer): a zero byte
// first, as only ZeroMQ's own routing ids have; the gateway drops a peer that claims one.
inline const std::string admin_identity_prefix{"\0admin#", 7};

std::int64_t now_us();

} // namespace haca::actors

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(haca::actors::inbound)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(haca::actors::records)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(haca::actors::outcomes)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(haca::actors::executed_jobs)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(haca::actors::judged_jobs)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(haca::actors::settled_jobs)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(haca::actors::admitted_verifiers)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(haca::actors::left_nodes)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(haca::actors::admin_actions)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(haca::core::admin_order)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(haca::actors::peers)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(haca::core::job_lookup)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(haca::core::request_lookup)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(haca::core::request_found)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::shared_ptr<haca::actors::inbound_backlog>)
