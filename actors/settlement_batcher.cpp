// settlement_batcher: the settlement core's actor. Judged jobs come in from the verifier pool,
// blocks go to the store, settled jobs go back to job_queue (actors/core_adapter.hpp).
#include "actors/coordinator.hpp"
#include "actors/core_adapter.hpp"
#include "core/settlement.hpp"

namespace haca::actors {
namespace {

struct settlement_state {
  std::optional<core::settlement_core> core;
  core_adapter io{"settlement"};
  static inline const char* name = "settlement_batcher";
};

using self_ptr = caf::stateful_actor<settlement_state>*;

void step(self_ptr self, const core::settlement_event& ev) {
  auto fx = self->state.core->step(ev, now_us());
  self->state.io.carry_out(self, fx);
  if (auto* m = self->state.io.peer().stats.get()) {
    m->settlement_backlog = static_cast<std::int64_t>(self->state.core->backlog());
    m->chain_height = self->state.core->next_height() - 1;
  }
  // A block the store refuses as a whole (a fork, a broken store) stops the chain: fail fast,
  // and a restart rebuilds the chain head from what Postgres committed.
  if (self->state.core->stopped())
    throw std::runtime_error("settlement stopped: a block was refused as a whole (see the error above)");
}

caf::behavior settlement_batcher(self_ptr self, core::settlement_core core) {
  self->state.core.emplace(std::move(core));
  return {
      [=](peers_atom, const peers& p) {
        self->state.io.set_peers(p);
        guarded(self, "settlement", [&] { step(self, core::tick{}); });
      },
      [=](handoff_atom, judged_jobs& jobs) {
        guarded(self, "settlement", [&] {
          for (auto& j : jobs)
            step(self, std::move(j));
        });
      },
      [=](handoff_atom, admin_actions& orders) {
        guarded(self, "settlement", [&] {
          for (auto& o : orders)
            step(self, std::move(o));
        });
      },
      [=](committed_atom, records& recs, outcomes& outs) {
        self->state.io.confirmed(recs, outs);
        guarded(self, "settlement", [&] { step(self, core::committed{std::move(recs), std::move(outs)}); });
      },
      [=](tick_atom) {
        self->state.io.ticked(now_us());
        guarded(self, "settlement", [&] { step(self, core::tick{}); });
      },
  };
}

} // namespace

caf::actor spawn_settlement_batcher(caf::actor_system& sys, core::settlement_core core) {
  return sys.spawn(settlement_batcher, std::move(core));
}

} // namespace haca::actors
