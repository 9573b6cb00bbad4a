#include "net/curve.hpp"

#include <spdlog/spdlog.h>

#include "net/zmq_io.hpp"
#include "verify/hash.hpp"

namespace haca::net {
namespace {

std::string z85(const std::string& raw32) {
  char out[41];
  zmq_z85_encode(out, reinterpret_cast<const std::uint8_t*>(raw32.data()), 32);
  return std::string(out, 40);
}

std::string public_z85(const std::string& ed25519_public_hex) {
  auto hex = verify::curve_public_hex(ed25519_public_hex);
  if (hex.empty())
    return {};
  return z85(verify::from_hex(hex).value());
}

} // namespace

void make_curve_server(zmq::socket_t& s, const verify::key_pair& coordinator_key, const char* zap_domain) {
  s.set(zmq::sockopt::curve_server, 1);
  s.set(zmq::sockopt::curve_secretkey, z85(verify::curve_secret(coordinator_key)));
  s.set(zmq::sockopt::zap_domain, zap_domain);
}

bool make_curve_client(zmq::socket_t& s, const verify::key_pair& own_key, const std::string& coordinator_key_hex) {
  const auto server = public_z85(coordinator_key_hex);
  if (server.empty())
    return false;
  s.set(zmq::sockopt::curve_serverkey, server);
  s.set(zmq::sockopt::curve_publickey, public_z85(own_key.public_key_hex));
  s.set(zmq::sockopt::curve_secretkey, z85(verify::curve_secret(own_key)));
  return true;
}

zap_handler::zap_handler(const std::set<std::string>& node_allow_ed25519_hex) {
  for (const auto& k : node_allow_ed25519_hex)
    if (auto c = verify::curve_public_hex(k); !c.empty())
      allowed_curve_hex_.insert(c);
  zmq::socket_t rep{context(), zmq::socket_type::rep};
  rep.set(zmq::sockopt::linger, 0);
  rep.bind("inproc://zeromq.zap.01");
  thread_ = std::thread([this, s = std::move(rep)]() mutable { run(std::move(s)); });
}

zap_handler::~zap_handler() {
  stop_ = true;
  if (thread_.joinable())
    thread_.join();
}

// RFC 27 (ZAP): version, request id, domain, address, routing id, mechanism, credentials; the
// reply: version, request id, status code, status text, user id, metadata.
void zap_handler::run(zmq::socket_t s) {
  std::vector<std::string> req;
  zmq::pollitem_t items[] = {{s.handle(), 0, ZMQ_POLLIN, 0}};
  while (!stop_) {
    poll(items, 1, std::chrono::milliseconds(100));
    if (!(items[0].revents & ZMQ_POLLIN) || !recv_frames(s, req))
      continue;
    std::string code = "400", text = "not a CURVE handshake", user;
    if (req.size() >= 7 && req[0] == "1.0" && req[5] == "CURVE" && req[6].size() == 32) {
      user = verify::to_hex(req[6]);
      if (req[2] == client_domain || allowed_curve_hex_.empty() || allowed_curve_hex_.count(user)) {
        code = "200";
        text = "OK";
      } else {
        text = "this node's key is not on the allow-list";
        user.clear();
      }
    }
    if (code != "200") {
      ++refused_;
      spdlog::warn("zap: refused a connection from {}: {}", req.size() > 3 ? req[3] : "?", text);
    }
    send_frames(s, {"1.0", req.size() > 1 ? req[1] : "", code, text, user, ""});
  }
}

} // namespace haca::net
