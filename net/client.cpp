#include "net/client.hpp"

#include "net/zmq_io.hpp"

namespace haca::net {

client::client(const std::string& endpoint) : socket_(context(), zmq::socket_type::dealer) {
  tune_socket(socket_);
  socket_.set(zmq::sockopt::linger, 0);
  socket_.connect(endpoint);
}

void client::send(const proto::message& m) { send_message(socket_, m); }

std::optional<result<proto::message>> client::receive(std::chrono::milliseconds timeout) {
  zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
  if (poll(&item, 1, timeout) == 0)
    return std::nullopt;
  std::vector<std::string> frames;
  recv_frames(socket_, frames);
  return proto::decode(frames);
}

} // namespace haca::net
