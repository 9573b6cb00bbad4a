#pragma once
// CurveZMQ on both ports. Every key is derived from an Ed25519 key (verify::curve_secret,
// verify::curve_public_hex): the coordinator's CURVE server key from its block-signing key,
// a node's CURVE key from the key its HELLO names, a client's from its key file. Traffic is
// encrypted, and a connection's CURVE key proves which key its peer holds: a node's identity,
// a client's account.
#include <atomic>
#include <set>
#include <string>
#include <thread>

#include <zmq.hpp>

#include "verify/signing.hpp"

namespace haca::net {

// ZAP domains: which admission rule a server socket's handshakes get.
inline constexpr const char* node_domain = "haca-nodes";     // the allow-list, when there is one
inline constexpr const char* client_domain = "haca-clients"; // any key: it is the account

// The server side (a coordinator ROUTER), before bind. Needs a zap_handler running.
void make_curve_server(zmq::socket_t& s, const verify::key_pair& coordinator_key, const char* zap_domain);
// The client side (a node's or client's DEALER), before connect. False when the coordinator
// key is not a key.
bool make_curve_client(zmq::socket_t& s, const verify::key_pair& own_key, const std::string& coordinator_key_hex);

// The ZAP handler of the process's context. In node_domain it admits a CURVE peer whose
// Ed25519 key is in `node_allow` (hex), or any peer when that is empty; in client_domain any
// CURVE peer. It names each peer by its CURVE key (hex) as the messages' User-Id. Start it
// before the server sockets bind; it stops with the object.
class zap_handler {
public:
  explicit zap_handler(const std::set<std::string>& node_allow_ed25519_hex);
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
