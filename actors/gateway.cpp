#include "actors/gateway.hpp"

#include <map>

#include <spdlog/spdlog.h>

#include "net/zmq_io.hpp"

namespace haca::actors {
namespace {

constexpr const char* outbox_endpoint = "inproc://haca-gateway-outbox";
std::atomic<bool> stopping{false};

char port_tag(core::port p) { return p == core::port::client ? 'c' : 'n'; }

// Logs at most a few lines a second, then says how many it left out.
class log_limiter {
public:
  template <class... Args>
  void warn(fmt::format_string<Args...> f, Args&&... args) {
    const auto now = std::chrono::steady_clock::now();
    if (now - window_ > std::chrono::seconds(1)) {
      if (suppressed_ > 0)
        spdlog::warn("gateway: {} more rejected messages not logged", suppressed_);
      window_ = now;
      logged_ = suppressed_ = 0;
    }
    if (logged_++ < 5)
      spdlog::warn(f, std::forward<Args>(args)...);
    else
      ++suppressed_;
  }

private:
  std::chrono::steady_clock::time_point window_{};
  int logged_ = 0;
  std::int64_t suppressed_ = 0;
};

// Sends one message to a peer without ever blocking: a full pipe or an unknown peer drops it.
bool send_to_peer(zmq::socket_t& router, const std::vector<std::string>& frames, std::size_t first) {
  try {
    for (std::size_t i = first; i < frames.size(); ++i) {
      auto flags = zmq::send_flags::dontwait | (i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
      if (!router.send(zmq::buffer(frames[i]), flags))
        return false; // EAGAIN: the peer's pipe is full (only the first frame can fail so)
    }
    return true;
  } catch (const zmq::error_t&) {
    return false; // EHOSTUNREACH: the peer left (ROUTER_MANDATORY)
  }
}

struct gateway_loop {
  std::shared_ptr<gateway_sockets> sockets;
  proto::limits limits;
  gateway_routes routes;
  std::shared_ptr<gateway_stats> stats;
  std::map<std::string, bool> verifier_identities; // node identity -> said HELLO as a verifier
  log_limiter rejections;
  std::vector<std::string> frames;

  // Reads one message from a ROUTER, decodes it and hands it on (or answers ERROR).
  void read(zmq::socket_t& router, core::port port) {
    std::string peer_key; // the ZAP User-Id: the peer's CURVE key (a client's account)
    if (!net::recv_frames(router, frames, &peer_key) || frames.empty())
      return;
    ++stats->received;
    std::string identity = std::move(frames.front());
    frames.erase(frames.begin());
    if (identity.rfind(admin_identity_prefix, 0) == 0) { // answers to it would go to an admin request
      ++stats->rejected;
      rejections.warn("gateway: dropped a message from a peer whose routing id claims an admin request's");
      return;
    }
    auto decoded = proto::decode(frames, limits);
    if (!decoded) {
      ++stats->rejected;
      rejections.warn("gateway: rejected a message from a {}: {} ({})", port == core::port::client ? "client" : "node",
                      decoded.err().code, decoded.err().reason);
      std::vector<std::string> reply = proto::encode(proto::make_error(decoded.err()));
      reply.insert(reply.begin(), identity);
      if (send_to_peer(router, reply, 0))
        ++stats->sent;
      else
        ++stats->dropped;
      return;
    }
    auto& msg = decoded.value();
    caf::actor dest = routes.clients;
    auto* backlog = routes.client_backlog.get();
    if (port == core::port::node) {
      backlog = routes.node_backlog.get();
      if (msg.command == proto::cmd::hello) {
        // Every HELLO goes to the execution core, which admits nodes (their stake); where a
        // node's later messages go is decided by the role its HELLO claims.
        const auto caps = msg.header.find("capabilities");
        const bool verifier = caps != msg.header.end() && caps->is_object() && caps->contains("role") &&
                              (*caps)["role"] == "verifier";
        if (verifier_identities.size() > 100000 && !verifier_identities.count(identity))
          verifier_identities.erase(verifier_identities.begin()); // bounded under a HELLO flood
        verifier_identities[identity] = verifier;
      }
      auto v = verifier_identities.find(identity);
      const bool verifier = (v != verifier_identities.end() && v->second) || msg.command == proto::cmd::verdict;
      dest = verifier && msg.command != proto::cmd::hello ? routes.verifiers : routes.providers;
      if (msg.command == proto::cmd::disconnect && v != verifier_identities.end())
        verifier_identities.erase(v);
    }
    ++backlog->pending;
    caf::anon_send(dest, inbound_atom::value, inbound{port, std::move(identity), std::move(msg), std::move(peer_key)});
  }

  // Hands one message from an actor's outbox to its peer.
  void write(zmq::socket_t& outbox) {
    if (!net::recv_frames(outbox, frames) || frames.size() < 3)
      return;
    auto& router = frames[0][0] == port_tag(core::port::client) ? *sockets->clients : *sockets->nodes;
    if (send_to_peer(router, frames, 1))
      ++stats->sent;
    else
      ++stats->dropped;
  }

  void run() {
    auto& clients = *sockets->clients;
    auto& nodes = *sockets->nodes;
    auto& outbox = *sockets->outbox;
    bool client_paused = false, node_paused = false;
    while (!stopping) {
      // Backpressure: a port whose actor is far behind is not read until it catches up, so its
      // peers wait in their own pipes (bounded by the high-water marks) instead of in memory here.
      auto pause = [&](bool& paused, const inbound_backlog& backlog) {
        const bool now = backlog.pending > (paused ? routes.max_backlog / 2 : routes.max_backlog);
        stats->paused += now && !paused; // a pause is counted once, when it starts
        paused = now;
      };
      pause(client_paused, *routes.client_backlog);
      pause(node_paused, *routes.node_backlog);
      zmq::pollitem_t items[] = {{outbox.handle(), 0, ZMQ_POLLIN, 0},
                                 {clients.handle(), 0, static_cast<short>(client_paused ? 0 : ZMQ_POLLIN), 0},
                                 {nodes.handle(), 0, static_cast<short>(node_paused ? 0 : ZMQ_POLLIN), 0}};
      // Paused ports are looked at again after 1 ms; otherwise poll sleeps until something comes.
      net::poll(items, 3, std::chrono::milliseconds(client_paused || node_paused ? 1 : 100));
      // Out first: answers free the peers that wait for them.
      for (int i = 0; i < 256 && (items[0].revents & ZMQ_POLLIN); ++i) {
        write(outbox);
        items[0].revents = outbox.get(zmq::sockopt::events) & ZMQ_POLLIN;
      }
      if (items[1].revents & ZMQ_POLLIN)
        read(clients, core::port::client);
      if (items[2].revents & ZMQ_POLLIN)
        read(nodes, core::port::node);
    }
    // Stopping: whatever the actors handed over is still sent.
    while (outbox.get(zmq::sockopt::events) & ZMQ_POLLIN)
      write(outbox);
  }
};

} // namespace

result<std::shared_ptr<gateway_sockets>> bind_gateway(const std::string& client_endpoint, const std::string& node_endpoint,
                                                      const proto::limits& limits, const verify::key_pair& key,
                                                      const std::set<std::string>& node_allow) {
  auto s = std::make_shared<gateway_sockets>();
  s->zap = std::make_unique<net::zap_handler>(node_allow); // before any CURVE handshake
  // High-water marks, in messages per peer. Out: room for the answers to a client's 1000
  // requests in flight (an ACK and a RESULT each) or a provider's queue of JOBs; a peer that
  // never reads costs at most that before its messages are dropped. In: little, so that while
  // the gateway is not reading a port (backpressure) a flooding peer waits in TCP, not in
  // this process's memory.
  auto make_router = [&](const std::string& endpoint, int sndhwm, int rcvhwm,
                         const char* zap_domain) -> std::unique_ptr<zmq::socket_t> {
    auto r = std::make_unique<zmq::socket_t>(net::context(), zmq::socket_type::router);
    net::tune_socket(*r, limits);
    net::make_curve_server(*r, key, zap_domain);
    r->set(zmq::sockopt::sndhwm, sndhwm);
    r->set(zmq::sockopt::rcvhwm, rcvhwm);
    r->set(zmq::sockopt::router_mandatory, 1); // a send to a vanished peer is an error we count
    r->bind(endpoint);
    return r;
  };
  try {
    s->clients = make_router(client_endpoint, 10000, 1000, net::client_domain);
  } catch (const zmq::error_t& e) {
    return make_error(errc::io_error, "cannot listen for clients on " + client_endpoint + ": " + e.what());
  }
  try {
    s->nodes = make_router(node_endpoint, 50000, 10000, net::node_domain);
  } catch (const zmq::error_t& e) {
    return make_error(errc::io_error, "cannot listen for nodes on " + node_endpoint + ": " + e.what());
  }
  s->outbox = std::make_unique<zmq::socket_t>(net::context(), zmq::socket_type::pull);
  s->outbox->set(zmq::sockopt::rcvhwm, 0);
  s->outbox->bind(outbox_endpoint);
  return s;
}

caf::actor spawn_gateway(caf::actor_system& sys, std::shared_ptr<gateway_sockets> sockets, proto::limits limits,
                         gateway_routes routes, std::shared_ptr<gateway_stats> stats) {
  return sys.spawn<caf::detached>([=](caf::blocking_actor*) {
    gateway_loop{sockets, limits, routes, stats, {}, {}, {}}.run();
  });
}

void gateway_stop() { stopping = true; }

outbox::outbox() : push_(net::context(), zmq::socket_type::push) {
  push_.set(zmq::sockopt::sndhwm, 0); // never drop here: the gateway drains this queue
  push_.set(zmq::sockopt::linger, 0);
  push_.connect(outbox_endpoint);
}

void outbox::send(core::port to, const std::string& identity, const proto::message& m) {
  auto frames = proto::encode(m);
  push_.send(zmq::buffer(std::string(1, port_tag(to))), zmq::send_flags::sndmore);
  push_.send(zmq::buffer(identity), zmq::send_flags::sndmore);
  net::send_frames(push_, frames);
}

} // namespace haca::actors
