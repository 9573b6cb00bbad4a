#pragma once
// What the three core actors (job_queue, verifier_pool, settlement_batcher) share: carrying
// out a core's effects. Records go to the store (its answer comes back as `committed_atom`),
// messages go out through the actor's own outbox in the order the core produced them,
// hand-offs go to the next core, STATUS look-ups to the reader, and the core's next wake-up
// becomes a timer. Decisions stay in the core: this only moves data.
#include <map>
#include <optional>
#include <string>

#include <caf/all.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "actors/gateway.hpp"
#include "actors/messages.hpp"
#include "actors/metrics.hpp"

namespace haca::actors {

class core_adapter {
public:
  explicit core_adapter(const char* name) : name_(name) {}

  void set_peers(const peers& p) { peers_ = p; }
  const peers& peer() const { return peers_; }
  std::size_t unconfirmed() const { return unconfirmed_; } // persist batches the store has not answered
  const char* name() const { return name_; }

  void carry_out(caf::event_based_actor* self, core::effects& fx) {
    for (const auto& e : fx.errors)
      spdlog::error("{}: {}", name_, e);
    for (const auto& n : fx.notes)
      spdlog::info("{}: {}", name_, n);
    if (!fx.records.empty()) {
      ++unconfirmed_;
      self->send(peers_.store, persist_atom::value, std::move(fx.records));
    }
    for (const auto& m : fx.messages)
      send(m.to, m.identity, m.msg);
    if (!fx.to_verification.empty())
      self->send(peers_.verifier_pool, handoff_atom::value, std::move(fx.to_verification));
    if (!fx.to_settlement.empty())
      self->send(peers_.settlement, handoff_atom::value, std::move(fx.to_settlement));
    if (!fx.to_execution.empty())
      self->send(peers_.job_queue, handoff_atom::value, std::move(fx.to_execution));
    if (!fx.admitted_verifiers.empty())
      self->send(peers_.verifier_pool, handoff_atom::value, std::move(fx.admitted_verifiers));
    if (!fx.nodes_left.empty())
      self->send(peers_.job_queue, handoff_atom::value, std::move(fx.nodes_left));
    if (!fx.orders.empty()) {
      self->send(peers_.verifier_pool, handoff_atom::value, fx.orders);
      self->send(peers_.settlement, handoff_atom::value, std::move(fx.orders));
    }
    for (auto& l : fx.lookups)
      self->send(peers_.reader, lookup_atom::value, std::move(l));
    for (auto& l : fx.request_lookups)
      self->send(peers_.reader, lookup_atom::value, std::move(l)); // answered with a request_found
    arm(self, fx.wake_at_us);
  }

  // The store's answer to one persist batch: what committed counts in the metrics.
  void confirmed(const records& recs, const outcomes& outs) {
    --unconfirmed_;
    if (peers_.stats)
      peers_.stats->committed(recs, outs);
  }

  // A tick arrived: the timer that sent it is spent.
  void ticked(std::int64_t now) {
    if (armed_at_ && *armed_at_ <= now)
      armed_at_.reset();
  }

  // Every message out (a core's, or a reply the actor makes itself to a message that did not
  // decode); an ERROR counts in the metrics by its code. A message to an admin API request
  // answers it (its header, as JSON text: an ERROR's has "code" and "reason").
  void send(core::port to, const std::string& identity, const proto::message& m) {
    if (auto a = answers_.find(identity); a != answers_.end()) {
      auto answer = m.header;
      answer["command"] = m.command;
      a->second.deliver(answer.dump());
      answers_.erase(a);
      return;
    }
    if (peers_.stats && m.command == proto::cmd::error)
      if (auto c = m.header.find("code"); c != m.header.end() && c->is_string())
        peers_.stats->error_sent(c->get<std::string>());
    out_.send(to, identity, m);
  }

  // An admin API request waits for the core's answer: the identity the core answers to. The
  // HTTP side gives up after its timeout; past max_answers waiting, the oldest is dropped (its
  // request is answered 504 "unknown", as after a timeout), so the map stays bounded.
  std::string await_answer(caf::response_promise rp) {
    static constexpr std::size_t max_answers = 256;
    if (answers_.size() >= max_answers)
      answers_.erase(answers_.begin());
    // Zero-padded, so the map's first entry is the oldest.
    auto identity = admin_identity_prefix + fmt::format("{:020}", ++answer_seq_);
    answers_.emplace(identity, std::move(rp));
    return identity;
  }

private:
  void arm(caf::event_based_actor* self, std::int64_t wake_at) {
    if (wake_at <= 0 || (armed_at_ && *armed_at_ <= wake_at))
      return;
    armed_at_ = wake_at;
    const auto delay = std::max<std::int64_t>(wake_at - now_us(), 0);
    self->delayed_send(self, std::chrono::microseconds(delay), tick_atom::value);
  }

  const char* name_;
  peers peers_;
  outbox out_;
  std::size_t unconfirmed_ = 0;
  std::optional<std::int64_t> armed_at_;
  std::map<std::string, caf::response_promise> answers_; // by identity "\0admin#<n>"
  std::uint64_t answer_seq_ = 0;
};

// Decodes the session commands every node speaks (HELLO, READY, HEARTBEAT, DISCONNECT) into
// an event of either node-facing core. Nothing when the command is another one; the error
// when the message does not parse (then it changes nothing).
template <class Event>
std::optional<result<Event>> decode_session_command(const inbound& in) {
  const auto& m = in.msg;
  auto parsed = [&](auto r, auto make) -> std::optional<result<Event>> {
    if (!r)
      return result<Event>{r.err()};
    return result<Event>{Event{make(std::move(r.value()))}};
  };
  if (m.command == proto::cmd::hello) {
    auto caps = proto::parse_hello(m);
    if (caps) // a HELLO names the key its connection proved (CurveZMQ), or it is a replay
      if (auto bound = proto::check_hello_bound(caps.value(), in.peer_key); !bound)
        return result<Event>{bound.err()};
    return parsed(std::move(caps), [&](proto::capabilities c) { return core::node_hello{in.identity, std::move(c)}; });
  }
  if (m.command == proto::cmd::ready)
    return parsed(proto::parse_ready(m), [&](std::int32_t n) { return core::node_ready{in.identity, n}; });
  if (m.command == proto::cmd::heartbeat)
    return result<Event>{Event{core::node_heartbeat{in.identity}}};
  if (m.command == proto::cmd::disconnect)
    return result<Event>{Event{core::node_gone{in.identity, "it disconnected"}}};
  return std::nullopt;
}

// Runs f; an exception (a bug: cores do not throw on bad input) is logged and ends the actor,
// and the coordinator, which monitors it, exits non-zero so a supervisor restarts it.
template <class F>
void guarded(caf::event_based_actor* self, const char* name, F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    spdlog::critical("{}: {}", name, e.what());
    self->quit(caf::make_error(caf::sec::runtime_error, std::string(name) + ": " + e.what()));
  }
}

} // namespace haca::actors
