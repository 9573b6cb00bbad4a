// store: the only actor that talks to Postgres. Detached (blocking I/O on its own thread).
// Group commit: operations that arrive while the store is busy pile up in its mailbox; the
// first one buffered schedules a flush message behind them, so one transaction serves them all.
#include <spdlog/spdlog.h>

#include "actors/coordinator.hpp"

namespace haca::actors {
namespace {

using flush_atom = caf::atom_constant<caf::atom("flush")>;

struct store_state {
  std::shared_ptr<db::store> db;
  std::vector<db::operation> ops;
  std::vector<std::optional<caf::response_promise>> promises;
  static inline const char* name = "store";
};

void buffer(caf::stateful_actor<store_state>* self, db::operation op, std::optional<caf::response_promise> rp) {
  auto& st = self->state;
  if (st.ops.empty())
    self->send(self, flush_atom::value);
  st.ops.push_back(std::move(op));
  st.promises.push_back(std::move(rp));
}

caf::behavior store_actor(caf::stateful_actor<store_state>* self, std::shared_ptr<db::store> db) {
  self->state.db = std::move(db);
  return {
      [=](db::operation& op) -> caf::response_promise {
        auto rp = self->make_response_promise();
        buffer(self, std::move(op), rp);
        return rp;
      },
      [=](note_atom, db::operation& op) { buffer(self, std::move(op), std::nullopt); },
      [=](flush_atom) {
        auto& st = self->state;
        auto ops = std::move(st.ops);
        auto promises = std::move(st.promises);
        st.ops.clear();
        st.promises.clear();
        auto answers = st.db->apply(ops);
        for (std::size_t i = 0; i < answers.size(); ++i) {
          if (promises[i])
            promises[i]->deliver(store_reply{answers[i]});
          else if (!answers[i].ok())
            spdlog::error("store: a write failed: {} ({})", answers[i].err().reason, answers[i].err().code);
        }
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
