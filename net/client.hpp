#pragma once
// A client connection to the coordinator: one DEALER socket, used by one thread.
#include <chrono>
#include <optional>
#include <string>

#include <zmq.hpp>

#include "proto/message.hpp"

namespace haca::net {

class client {
public:
  explicit client(const std::string& endpoint);
  void send(const proto::message& m);
  // The next message, or nullopt when none arrives within timeout; a message that does not
  // decode comes back as its error.
  std::optional<result<proto::message>> receive(std::chrono::milliseconds timeout);

private:
  zmq::socket_t socket_;
};

} // namespace haca::net
