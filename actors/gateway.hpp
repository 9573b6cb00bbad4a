#pragma once
// The gateway: the one owner of the coordinator's ZeroMQ sockets. It runs on a thread of its
// own (a detached actor) blocked in zmq::poll over the client ROUTER, the node ROUTER and an
// inproc PULL; decoded frames become actor messages, and any actor sends frames out through
// gateway_send, which pushes them into that PULL from a thread-local inproc PUSH socket.
#include <memory>
#include <string>

#include <caf/all.hpp>
#include <zmq.hpp>

#include "actors/messages.hpp"
#include "proto/protocol.hpp"

namespace haca::actors {

struct gateway_sockets {
  std::unique_ptr<zmq::socket_t> clients; // ROUTER, bound
  std::unique_ptr<zmq::socket_t> nodes;   // ROUTER, bound
  std::unique_ptr<zmq::socket_t> outbox;  // PULL, bound to the inproc outbox
};

// Binds the sockets on the calling thread, so a port in use fails here with a clear error.
result<std::shared_ptr<gateway_sockets>> bind_gateway(const std::string& client_endpoint, const std::string& node_endpoint,
                                                      const proto::limits& limits);

// The gateway: a detached actor running the socket loop until gateway_stop(). Client messages
// go to job_queue, node messages to scheduler. Messages that do not decode are answered with
// ERROR right there and reach no other actor.
caf::actor spawn_gateway(caf::actor_system& sys, std::shared_ptr<gateway_sockets> sockets, proto::limits limits,
                         caf::actor job_queue, caf::actor scheduler);

// Thread-safe: queue a message to a peer on one of the ROUTER sockets.
void gateway_send(port_kind port, const std::string& identity, const proto::message& m);
void gateway_stop();

} // namespace haca::actors
