#include "actors/gateway.hpp"

#include <spdlog/spdlog.h>

#include "net/zmq_io.hpp"

namespace haca::actors {
namespace {

constexpr const char* outbox_endpoint = "inproc://haca-gateway-outbox";
constexpr char stop_marker = 's';

zmq::socket_t& thread_outbox() {
  thread_local zmq::socket_t push = [] {
    zmq::socket_t s{net::context(), zmq::socket_type::push};
    s.set(zmq::sockopt::sndhwm, 0); // never drop: the gateway drains this queue
    s.set(zmq::sockopt::linger, 0);
    s.connect(outbox_endpoint);
    return s;
  }();
  return push;
}

void reply_error(zmq::socket_t& router, const std::string& identity, const error& e) {
  auto frames = proto::encode(proto::make_error(e));
  frames.insert(frames.begin(), identity);
  try {
    net::send_frames(router, frames);
  } catch (const zmq::error_t& ex) {
    spdlog::debug("gateway: cannot answer a peer that left: {}", ex.what());
  }
}

// Reads one message from a ROUTER, decodes it and hands it on (or answers ERROR).
void on_router(zmq::socket_t& router, port_kind port, const proto::limits& limits, const caf::actor& dest) {
  std::vector<std::string> frames;
  if (!net::recv_frames(router, frames) || frames.empty())
    return;
  std::string identity = std::move(frames.front());
  frames.erase(frames.begin());
  auto decoded = proto::decode(frames, limits);
  if (!decoded) {
    spdlog::info("gateway: rejected a message from a {}: {} ({})", port == port_kind::client ? "client" : "node",
                 decoded.err().code, decoded.err().reason);
    reply_error(router, identity, decoded.err());
    return;
  }
  caf::anon_send(dest, inbound_atom::value, inbound{port, std::move(identity), std::move(decoded.value())});
}

} // namespace

result<std::shared_ptr<gateway_sockets>> bind_gateway(const std::string& client_endpoint, const std::string& node_endpoint,
                                                      const proto::limits& limits) {
  auto s = std::make_shared<gateway_sockets>();
  auto make_router = [&](const std::string& endpoint) -> std::unique_ptr<zmq::socket_t> {
    auto r = std::make_unique<zmq::socket_t>(net::context(), zmq::socket_type::router);
    net::tune_socket(*r, limits);
    r->set(zmq::sockopt::router_mandatory, 1); // a send to a vanished peer is an error, not a silent drop
    r->bind(endpoint);
    return r;
  };
  try {
    s->clients = make_router(client_endpoint);
  } catch (const zmq::error_t& e) {
    return make_error(errc::io_error, "cannot listen for clients on " + client_endpoint + ": " + e.what());
  }
  try {
    s->nodes = make_router(node_endpoint);
  } catch (const zmq::error_t& e) {
    return make_error(errc::io_error, "cannot listen for nodes on " + node_endpoint + ": " + e.what());
  }
  s->outbox = std::make_unique<zmq::socket_t>(net::context(), zmq::socket_type::pull);
  s->outbox->set(zmq::sockopt::rcvhwm, 0);
  s->outbox->bind(outbox_endpoint);
  return s;
}

static void run_gateway(const std::shared_ptr<gateway_sockets>& sockets, const proto::limits& limits,
                 const caf::actor& job_queue, const caf::actor& scheduler) {
  auto& clients = *sockets->clients;
  auto& nodes = *sockets->nodes;
  auto& outbox = *sockets->outbox;
  zmq::pollitem_t items[] = {{clients.handle(), 0, ZMQ_POLLIN, 0},
                             {nodes.handle(), 0, ZMQ_POLLIN, 0},
                             {outbox.handle(), 0, ZMQ_POLLIN, 0}};
  std::vector<std::string> frames;
  for (;;) {
    net::poll(items, 3, std::chrono::milliseconds{-1}); // blocks: no timeout, no busy wait
    if (items[0].revents & ZMQ_POLLIN)
      on_router(clients, port_kind::client, limits, job_queue);
    if (items[1].revents & ZMQ_POLLIN)
      on_router(nodes, port_kind::node, limits, scheduler);
    if (items[2].revents & ZMQ_POLLIN) {
      if (!net::recv_frames(outbox, frames) || frames.empty())
        continue;
      if (frames[0].size() == 1 && frames[0][0] == stop_marker)
        return;
      auto& router = frames[0][0] == static_cast<char>(port_kind::client) ? clients : nodes;
      try {
        for (std::size_t i = 1; i < frames.size(); ++i)
          router.send(zmq::buffer(frames[i]), i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
      } catch (const zmq::error_t& e) {
        spdlog::debug("gateway: dropped a message to a peer that left: {}", e.what());
      }
    }
  }
}

caf::actor spawn_gateway(caf::actor_system& sys, std::shared_ptr<gateway_sockets> sockets, proto::limits limits,
                         caf::actor job_queue, caf::actor scheduler) {
  return sys.spawn<caf::detached>([=](caf::blocking_actor*) { run_gateway(sockets, limits, job_queue, scheduler); });
}

void gateway_send(port_kind port, const std::string& identity, const proto::message& m) {
  auto frames = proto::encode(m);
  auto& push = thread_outbox();
  push.send(zmq::buffer(std::string(1, static_cast<char>(port))), zmq::send_flags::sndmore);
  push.send(zmq::buffer(identity), zmq::send_flags::sndmore);
  net::send_frames(push, frames);
}

void gateway_stop() {
  thread_outbox().send(zmq::buffer(std::string(1, stop_marker)), zmq::send_flags::none);
}

} // namespace haca::actors
