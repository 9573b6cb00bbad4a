#include "net/client.hpp"

#include <stdexcept>

#include "net/curve.hpp"
#include "net/zmq_io.hpp"

namespace haca::net {

std::string client_credentials::account() const { return verify::curve_public_hex(key.public_key_hex); }

client::client(const std::string& endpoint, const client_credentials& credentials)
    : socket_(context(), zmq::socket_type::dealer) {
  tune_socket(socket_);
  socket_.set(zmq::sockopt::linger, 0);
  if (!make_curve_client(socket_, credentials.key, credentials.coordinator_key))
    throw std::invalid_argument("the coordinator key '" + credentials.coordinator_key.substr(0, 80) +
                                "' is not an Ed25519 public key");
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
