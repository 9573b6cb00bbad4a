// store: the only actor that writes to Postgres. Detached (blocking I/O on its own thread).
// Group commit: persist messages that arrive while a commit is running pile up in the mailbox;
// the first one buffered schedules a flush behind them, so one transaction serves them all.
// A commit that ends in doubt (connection lost, server restarting) is applied again until
// Postgres answers: records are idempotent, so a retry finds its own earlier commit. Nobody is
// told anything before that, so a stalled Postgres delays answers and never loses them.
#include <deque>
#include <thread>

#include <spdlog/spdlog.h>

#include "actors/coordinator.hpp"

namespace haca::actors {
namespace {

using flush_atom = caf::atom_constant<caf::atom("flush")>;

constexpr std::size_t max_records_per_commit = 4096;

struct pending {
  caf::strong_actor_ptr reply_to;
  records recs;
};

struct store_state {
  std::shared_ptr<db::store> db;
  std::deque<pending> queue;
  static inline const char* name = "store";
};

using self_ptr = caf::stateful_actor<store_state>*;

// Applies until Postgres decides; logs the failures and backs off.
outcomes apply_until_decided(self_ptr self, const records& all) {
  auto backoff = std::chrono::milliseconds(20);
  for (int attempt = 1;; ++attempt) {
    auto r = self->state.db->apply(all);
    if (auto* out = std::get_if<outcomes>(&r))
      return std::move(*out);
    if (attempt == 1 || attempt % 20 == 0)
      spdlog::warn("store: commit of {} records not confirmed ({}); retrying (try {})", all.size(),
                   std::get<db::transient_error>(r).reason, attempt);
    std::this_thread::sleep_for(backoff);
    backoff = std::min(backoff * 2, std::chrono::milliseconds(1000));
  }
}

void flush(self_ptr self) {
  auto& st = self->state;
  std::vector<std::pair<caf::strong_actor_ptr, std::size_t>> senders; // and how many records each sent
  records all;
  while (!st.queue.empty() &&
         (senders.empty() || all.size() + st.queue.front().recs.size() <= max_records_per_commit)) {
    auto& p = st.queue.front();
    senders.emplace_back(std::move(p.reply_to), p.recs.size());
    std::move(p.recs.begin(), p.recs.end(), std::back_inserter(all));
    st.queue.pop_front();
  }
  if (!st.queue.empty())
    self->send(self, flush_atom::value);
  if (all.empty() && senders.empty())
    return;
  const auto started = std::chrono::steady_clock::now();
  auto outs = apply_until_decided(self, all);
  spdlog::debug("store: {} records from {} senders committed in {} us", all.size(), senders.size(),
                std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - started).count());
  // Each sender gets back its own records with their outcomes, in its order.
  std::size_t at = 0;
  for (auto& [sender, n] : senders) {
    records recs(std::make_move_iterator(all.begin() + static_cast<std::ptrdiff_t>(at)),
                 std::make_move_iterator(all.begin() + static_cast<std::ptrdiff_t>(at + n)));
    outcomes o(outs.begin() + static_cast<std::ptrdiff_t>(at), outs.begin() + static_cast<std::ptrdiff_t>(at + n));
    at += n;
    caf::anon_send(caf::actor_cast<caf::actor>(sender), committed_atom::value, std::move(recs), std::move(o));
  }
}

caf::behavior store_actor(self_ptr self, std::shared_ptr<db::store> db) {
  self->state.db = std::move(db);
  return {
      [=](persist_atom, records& recs) {
        auto& st = self->state;
        if (st.queue.empty())
          self->send(self, flush_atom::value);
        st.queue.push_back({self->current_sender(), std::move(recs)});
      },
      [=](flush_atom) { flush(self); },
      // Answered after everything sent before it is committed (the mailbox is in order).
      [=](sync_atom) {
        while (!self->state.queue.empty())
          flush(self);
        return true;
      },
  };
}

} // namespace

caf::actor spawn_store(caf::actor_system& sys, std::shared_ptr<db::store> db) {
  return sys.spawn<caf::detached>(store_actor, std::move(db));
}

std::int64_t now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

} // namespace haca::actors
