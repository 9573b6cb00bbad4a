#include "net/node_session.hpp"

#include <chrono>
#include <thread>

#include <spdlog/spdlog.h>

#include "net/curve.hpp"
#include "net/zmq_io.hpp"

namespace haca::net {
namespace {

constexpr const char* outbox_endpoint = "inproc://haca-node-outbox";

using clock = std::chrono::steady_clock;

} // namespace

node_session::node_session(node_options opts, work_handler on_work) : opts_(std::move(opts)), on_work_(std::move(on_work)) {
  opts_.caps.public_key = opts_.key.public_key_hex;
}

void node_session::post(const proto::message& m) {
  thread_local zmq::socket_t push = [] {
    zmq::socket_t s{context(), zmq::socket_type::push};
    s.set(zmq::sockopt::sndhwm, 0);
    s.set(zmq::sockopt::linger, 0);
    s.connect(outbox_endpoint);
    return s;
  }();
  send_message(push, m);
}

void node_session::run(const std::atomic<bool>& stop) {
  zmq::socket_t outbox{context(), zmq::socket_type::pull};
  outbox.set(zmq::sockopt::rcvhwm, 0);
  outbox.bind(outbox_endpoint);
  auto backoff = std::chrono::milliseconds(250);
  const auto max_backoff = std::chrono::milliseconds(8000);
  std::vector<std::string> frames;

  while (!stop) {
    zmq::socket_t dealer{context(), zmq::socket_type::dealer};
    tune_socket(dealer);
    dealer.set(zmq::sockopt::linger, 0);
    if (!make_curve_client(dealer, opts_.key, opts_.coordinator_key))
      throw std::runtime_error("the coordinator key '" + opts_.coordinator_key.substr(0, 80) + "' is not a public key");
    dealer.connect(opts_.endpoint);
    opts_.caps.timestamp_us =
        std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
    send_message(dealer, proto::make_hello(opts_.caps, opts_.key));
    spdlog::info("{} '{}': HELLO to {}", opts_.caps.role, opts_.caps.name, opts_.endpoint);

    bool welcomed = false;
    int heartbeat_ms = opts_.heartbeat_ms;
    auto last_heard = clock::now();
    auto next_beat = clock::now() + std::chrono::milliseconds(heartbeat_ms);
    zmq::pollitem_t items[] = {{dealer.handle(), 0, ZMQ_POLLIN, 0}, {outbox.handle(), 0, ZMQ_POLLIN, 0}};
    std::string drop_reason;
    while (!stop && drop_reason.empty()) {
      auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(next_beat - clock::now());
      poll(items, 2, std::max(wait, std::chrono::milliseconds(0)));
      if (items[0].revents & ZMQ_POLLIN) {
        recv_frames(dealer, frames);
        last_heard = clock::now();
        auto msg = proto::decode(frames);
        if (!msg) {
          spdlog::warn("{}: undecodable message from the coordinator: {}", opts_.caps.name, msg.err().reason);
        } else if (msg->command == proto::cmd::welcome) {
          auto w = proto::parse_welcome(msg.value());
          if (w && w->heartbeat_ms > 0)
            heartbeat_ms = w->heartbeat_ms;
          welcomed = true;
          backoff = std::chrono::milliseconds(250);
          send_message(dealer, proto::make_ready(opts_.credit));
          spdlog::info("{} '{}': welcomed (heartbeat {} ms), credit {}", opts_.caps.role, opts_.caps.name, heartbeat_ms,
                       opts_.credit);
        } else if (msg->command == proto::cmd::job || msg->command == proto::cmd::verify ||
                   msg->command == proto::cmd::probe) {
          on_work_(std::move(msg.value()));
        } else if (msg->command == proto::cmd::error) {
          auto e = proto::parse_error(msg.value());
          spdlog::warn("{}: coordinator says: {} ({})", opts_.caps.name, e ? e->reason : "?", e ? e->code : "?");
          if (e && (e->code == errc::not_registered || e->code == errc::bad_signature))
            drop_reason = "coordinator does not know this session";
          else if (e && !welcomed && (e->code == errc::insufficient_funds || e->code == errc::forbidden))
            drop_reason = "HELLO refused (" + e->code + ")"; // tried again after the back-off: a deposit may come

        } else if (msg->command == proto::cmd::disconnect) {
          auto d = msg->header.find("reason");
          drop_reason = "coordinator disconnected us: " +
                        (d != msg->header.end() && d->is_string() ? proto::bounded_text(d->get<std::string>()) : "");
        }
      }
      if (items[1].revents & ZMQ_POLLIN) {
        recv_frames(outbox, frames);
        if (welcomed)
          send_frames(dealer, frames);
        else
          spdlog::warn("{}: dropped an outgoing message while not connected", opts_.caps.name);
      }
      auto now = clock::now();
      if (now >= next_beat) {
        if (welcomed)
          send_message(dealer, proto::make_heartbeat());
        next_beat = now + std::chrono::milliseconds(heartbeat_ms);
      }
      if (now - last_heard > std::chrono::milliseconds(heartbeat_ms * proto::heartbeat_liveness))
        drop_reason = welcomed ? "coordinator silent" : "no WELCOME";
    }
    if (stop) {
      send_message(dealer, proto::make_disconnect("node shutting down"));
      break;
    }
    spdlog::warn("{} '{}': {}; reconnecting in {} ms", opts_.caps.role, opts_.caps.name, drop_reason, backoff.count());
    std::this_thread::sleep_for(backoff);
    backoff = std::min(backoff * 2, max_backoff);
  }
}

} // namespace haca::net
