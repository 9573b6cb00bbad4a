#pragma once
// The gateway: the one owner of the coordinator's ZeroMQ sockets. It runs on a thread of its
// own (a detached actor) blocked in zmq::poll over the client ROUTER, the node ROUTER and an
// inproc PULL. Decoded frames become actor messages; actors send through an `outbox` each owns
// (an inproc PUSH into that PULL), so the messages of one actor leave in the order it sent
// them. The gateway never blocks on a peer: a message to a peer that does not read (its pipe
// at the high-water mark) or that left is dropped and counted.
#include <set>
#include "net/curve.hpp"
#include <atomic>
#include <memory>
#include <string>

#include <caf/all.hpp>
#include <zmq.hpp>

#include "actors/messages.hpp"
#include "proto/protocol.hpp"

namespace haca::actors {

struct gateway_sockets {
  std::unique_ptr<net::zap_handler> zap;  // admits CURVE peers on the node port
  std::unique_ptr<zmq::socket_t> clients; // ROUTER, bound
  std::unique_ptr<zmq::socket_t> nodes;   // ROUTER, bound, CurveZMQ server
  std::unique_ptr<zmq::socket_t> outbox;  // PULL, bound to the inproc outbox
};

// Counters the gateway keeps (read by tests and, later, metrics).
struct gateway_stats {
  std::atomic<std::int64_t> received{0};
  std::atomic<std::int64_t> rejected{0};     // did not decode: answered ERROR, reached no actor
  std::atomic<std::int64_t> sent{0};
  std::atomic<std::int64_t> dropped{0};      // peer gone or not reading
  std::atomic<std::int64_t> paused{0};       // times reading a port was paused for backpressure
};

// Binds the sockets on the calling thread, so a port in use fails here with a clear error.
// The node port speaks CurveZMQ with the coordinator's key; node_allow (Ed25519 keys, hex) is
// who may connect there, anyone when empty.
result<std::shared_ptr<gateway_sockets>> bind_gateway(const std::string& client_endpoint, const std::string& node_endpoint,
                                                      const proto::limits& limits, const verify::key_pair& key,
                                                      const std::set<std::string>& node_allow);

struct gateway_routes {
  caf::actor clients;        // every client message
  caf::actor providers;      // node messages, unless the node said HELLO as a verifier
  caf::actor verifiers;
  std::shared_ptr<inbound_backlog> client_backlog;
  std::shared_ptr<inbound_backlog> node_backlog;
  // Stop reading a port while its actor has this many of its messages unhandled: every peer
  // then waits its turn in its own pipe (ZeroMQ reads the pipes fairly), instead of behind a
  // flooder in one long mailbox.
  std::int64_t max_backlog = 1000;
};

// Runs the socket loop until gateway_stop(); then sends what the outbox still holds and ends.
caf::actor spawn_gateway(caf::actor_system& sys, std::shared_ptr<gateway_sockets> sockets, proto::limits limits,
                         gateway_routes routes, std::shared_ptr<gateway_stats> stats);
void gateway_stop();

// One actor's way out to the peers. Not thread-safe: one owner (an actor, whose handlers
// never run concurrently).
class outbox {
public:
  outbox();
  void send(core::port to, const std::string& identity, const proto::message& m);

private:
  zmq::socket_t push_;
};

} // namespace haca::actors
