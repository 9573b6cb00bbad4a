#pragma once
// CurveZMQ on the node port. Every key is derived from an Ed25519 key (verify::curve_secret,
// verify::curve_public_hex): the coordinator's CURVE server key from its block-signing key,
// a node's CURVE key from the key its HELLO names. Traffic is encrypted, and a connection's
// CURVE key proves which Ed25519 key its peer holds.
#include <atomic>
#include <set>
#include <string>
#include <thread>

#include <zmq.hpp>

#include "verify/signing.hpp"

namespace haca::net {

// The server side (the coordinator's node ROUTER), before bind. Needs a zap_handler running.
void make_curve_server(zmq::socket_t& s, const verify::key_pair& coordinator_key);
// The client side (a node's DEALER), before connect. False when the coordinator key is not a key.
bool make_curve_client(zmq::socket_t& s, const verify::key_pair& node_key, const std::string& coordinator_key_hex);

// The ZAP handler of the process's context: admits a CURVE peer whose Ed25519 key is in
// `allowed` (hex), or any peer when `allowed` is empty, and names it by its CURVE key (hex) as
// the messages' User-Id. Start it before the server socket binds; it stops with the object.
class zap_handler {
public:
  explicit zap_handler(const std::set<std::string>& allowed_ed25519_hex);
  ~zap_handler();
  zap_handler(const zap_handler&) = delete;
  zap_handler& operator=(const zap_handler&) = delete;
  std::int64_t refused() const { return refused_; }

private:
  void run(zmq::socket_t socket);
  std::set<std::string> allowed_curve_hex_; // empty: open
  std::atomic<bool> stop_{false};
  std::atomic<std::int64_t> refused_{0};
  std::thread thread_;
};

} // namespace haca::net
