#pragma once
// The node side of a coordinator session (providers and verifiers): HELLO with signed
// capabilities, WELCOME, READY credit, heartbeats both ways, and reconnection with exponential
// back-off when the coordinator goes silent. Runs on the thread that calls run(); work is
// handed to actors, whose replies come back through post() from any thread.
#include <atomic>
#include <functional>
#include <string>

#include "proto/commands.hpp"
#include "verify/signing.hpp"

namespace haca::net {

struct node_options {
  std::string endpoint;            // e.g. tcp://127.0.0.1:7701
  proto::capabilities caps;        // public_key is filled from key
  verify::key_pair key;
  std::string coordinator_key;     // hex Ed25519: the node port's CurveZMQ server key
  int credit = 4;                  // jobs the node takes at once
  int heartbeat_ms = proto::default_heartbeat_ms;
};

class node_session {
public:
  // Called on the session thread for JOB / VERIFY; must not block.
  using work_handler = std::function<void(proto::message)>;

  node_session(node_options opts, work_handler on_work);
  // Runs until stop is set; sends DISCONNECT on the way out.
  void run(const std::atomic<bool>& stop);
  // Thread-safe: queue a message (DONE, FAIL, VERDICT, READY) for the coordinator.
  static void post(const proto::message& m);

private:
  node_options opts_;
  work_handler on_work_;
};

} // namespace haca::net
