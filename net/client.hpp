#pragma once
// A client connection to the coordinator: one DEALER socket over CurveZMQ, used by one thread.
// The client's key is its account: the coordinator knows it from the handshake, per connection.
#include <chrono>
#include <optional>
#include <string>

#include <zmq.hpp>

#include "proto/message.hpp"
#include "verify/signing.hpp"

namespace haca::net {

struct client_credentials {
  verify::key_pair key;        // the client's Ed25519 key; its CURVE key (derived) is the account
  std::string coordinator_key; // the coordinator's Ed25519 public key (hex): the CURVE server key
  std::string account() const; // the account id: the CURVE public key, 64 hex characters
};

class client {
public:
  // Throws std::invalid_argument when coordinator_key is not a public key.
  client(const std::string& endpoint, const client_credentials& credentials);
  void send(const proto::message& m);
  // The next message, or nullopt when none arrives within timeout; a message that does not
  // decode comes back as its error.
  std::optional<result<proto::message>> receive(std::chrono::milliseconds timeout);

private:
  zmq::socket_t socket_;
};

} // namespace haca::net
