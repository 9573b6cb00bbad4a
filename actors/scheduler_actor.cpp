// scheduler: keeps the provider table (one provider_proxy each), pulls queued jobs from
// job_queue while providers have credit and places each one with scheduler::match.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "actors/coordinator.hpp"
#include "actors/gateway.hpp"

namespace haca::actors {
namespace {

struct provider_entry {
  caf::actor proxy;
  std::string identity;
  scheduler::provider_view view;
};

struct scheduler_state {
  coordinator_config cfg;
  peers p;
  std::map<std::string, provider_entry> providers;   // by public key
  std::map<std::string, std::string> provider_keys;  // identity -> public key
  std::set<std::string> verifiers;                   // identities of verifiers
  bool pulling = false;
  static inline const char* name = "scheduler";
};

using self_ptr = caf::stateful_actor<scheduler_state>*;

void pull(self_ptr self);

// Drops the provider's entry if `proxy` still serves it (a reconnect may have replaced it).
void drop_provider(self_ptr self, const std::string& key, const caf::actor_addr& proxy) {
  auto& st = self->state;
  auto it = st.providers.find(key);
  if (it == st.providers.end() || it->second.proxy.address() != proxy)
    return;
  st.provider_keys.erase(it->second.identity);
  self->demonitor(it->second.proxy);
  st.providers.erase(it);
}

void on_hello(self_ptr self, const inbound& in) {
  auto& st = self->state;
  auto caps = proto::parse_hello(in.msg);
  if (!caps) {
    gateway_send(port_kind::node, in.identity, proto::make_error(caps.err()));
    return;
  }
  if (caps->role == "verifier") {
    st.verifiers.insert(in.identity);
    self->send(st.p.verifier_pool, inbound_atom::value, in);
    return;
  }
  // A provider that reconnects (new identity or same) replaces its old session.
  if (auto old = st.providers.find(caps->public_key); old != st.providers.end())
    self->send_exit(old->second.proxy, caf::exit_reason::user_shutdown);
  if (auto old = st.provider_keys.find(in.identity); old != st.provider_keys.end())
    if (auto e = st.providers.find(old->second); e != st.providers.end())
      self->send_exit(e->second.proxy, caf::exit_reason::user_shutdown);
  scheduler::provider_view view{caps->public_key, caps->device,
                                std::set<std::string>(caps->models.begin(), caps->models.end()), 0, caps->price, 1000};
  auto proxy = spawn_provider_proxy(self->system(), st.p, in.identity, caps.value(), st.cfg.heartbeat_ms);
  self->monitor(proxy);
  st.providers[caps->public_key] = {proxy, in.identity, view};
  st.provider_keys[in.identity] = caps->public_key;
  self->send(st.p.store, note_atom::value, db::operation{db::upsert_node{caps.value()}});
  spdlog::info("scheduler: provider '{}' ({}) joined, {} models, price {}", caps->name, caps->public_key.substr(0, 12),
               caps->models.size(), caps->price);
}

void place(self_ptr self, std::vector<dispatch_job>& jobs) {
  auto& st = self->state;
  std::vector<scheduler::provider_view> views;
  for (const auto& [key, e] : st.providers)
    views.push_back(e.view);
  for (auto& job : jobs) {
    auto choice = scheduler::match({job.order.model, "", job.max_price, 0}, views);
    if (!choice.provider_key) {
      spdlog::debug("scheduler: job {} not placed: {}", job.order.job_id, choice.reason);
      self->send(st.p.job_queue, unplaced_atom::value, job);
      continue;
    }
    auto& entry = st.providers.at(*choice.provider_key);
    for (auto& v : views)
      if (v.key == entry.view.key)
        --v.credit;
    --entry.view.credit;
    job.order.price = entry.view.price;
    self->send(st.p.store, note_atom::value,
               db::operation{db::record_events{{{job.order.job_id, "ASSIGNED",
                                                 fmt::format("provider {}", entry.view.key.substr(0, 12)),
                                                 job.order.attempt, entry.view.key, now_us()}}}});
    self->send(entry.proxy, assign_atom::value, std::move(job));
  }
}

void pull(self_ptr self) {
  auto& st = self->state;
  if (st.pulling)
    return;
  int credit = 0;
  std::map<std::string, std::int64_t> prices; // model -> cheapest price among providers with credit
  for (const auto& [key, e] : st.providers) {
    if (e.view.credit <= 0)
      continue;
    credit += e.view.credit;
    for (const auto& m : e.view.models) {
      auto [it, fresh] = prices.emplace(m, e.view.price);
      if (!fresh)
        it->second = std::min(it->second, e.view.price);
    }
  }
  if (credit == 0)
    return;
  st.pulling = true;
  self->request(st.p.job_queue, local_timeout, pull_atom::value, credit, prices)
      .then(
          [=](std::vector<dispatch_job>& jobs) {
            self->state.pulling = false;
            bool more = static_cast<int>(jobs.size()) == credit;
            place(self, jobs);
            if (more)
              pull(self);
          },
          [=](caf::error& e) {
            self->state.pulling = false;
            spdlog::error("scheduler: job_queue did not answer a pull: {}", self->system().render(e));
          });
}

caf::behavior scheduler_actor(self_ptr self, coordinator_config cfg) {
  self->state.cfg = std::move(cfg);
  self->set_down_handler([=](caf::down_msg& dm) {
    for (const auto& [key, e] : self->state.providers)
      if (e.proxy.address() == dm.source) {
        drop_provider(self, key, dm.source);
        return;
      }
  });
  return {
      [=](peers_atom, const peers& p) { self->state.p = p; },
      [=](inbound_atom, const inbound& in) {
        auto& st = self->state;
        if (in.msg.command == proto::cmd::hello) {
          on_hello(self, in);
        } else if (auto key = st.provider_keys.find(in.identity); key != st.provider_keys.end()) {
          self->send(st.providers.at(key->second).proxy, inbound_atom::value, in);
        } else if (st.verifiers.count(in.identity)) {
          self->send(st.p.verifier_pool, inbound_atom::value, in);
        } else {
          gateway_send(port_kind::node, in.identity,
                       proto::make_error(make_error(errc::not_registered,
                                                    fmt::format("{} from a node that has not sent HELLO (or was "
                                                                "dropped after missing heartbeats); send HELLO first",
                                                                in.msg.command))));
        }
      },
      [=](credit_atom, const std::string& key, int credit) {
        if (auto it = self->state.providers.find(key); it != self->state.providers.end()) {
          it->second.view.credit = credit;
          pull(self);
        }
      },
      [=](ready_atom) { pull(self); },
      // A provider missed its heartbeats or left: its jobs go back to the queue.
      [=](lost_atom, const std::string& key, const std::vector<dispatch_job>& in_flight, const std::string& why) {
        spdlog::warn("scheduler: provider {} lost ({}); re-queueing {} jobs", key.substr(0, 12), why, in_flight.size());
        drop_provider(self, key, caf::actor_cast<caf::actor_addr>(self->current_sender()));
        for (const auto& job : in_flight)
          self->send(self->state.p.job_queue, requeue_atom::value, job.order.job_id, job.order.attempt,
                     fmt::format("provider {} lost: {}", key.substr(0, 12), why));
      },
  };
}

} // namespace

caf::actor spawn_scheduler(caf::actor_system& sys, const coordinator_config& cfg) {
  return sys.spawn(scheduler_actor, cfg);
}

} // namespace haca::actors
