// status_reader: answers STATUS (and looks up resent request ids) from Postgres on a connection of its own (detached: blocking
// reads), never through the write queue.
#include "actors/coordinator.hpp"
#include "actors/gateway.hpp"

namespace haca::actors {
namespace {

struct reader_state {
  std::unique_ptr<db::reader> db;
  std::unique_ptr<outbox> out;
  static inline const char* name = "status_reader";
};

caf::behavior status_reader(caf::stateful_actor<reader_state>* self, std::string url) {
  self->state.db = std::make_unique<db::reader>(std::move(url));
  self->state.out = std::make_unique<outbox>();
  return {
      [=](lookup_atom, const core::job_lookup& l) {
        self->state.out->send(core::port::client, l.identity, self->state.db->answer(l));
      },
      // Is a refused request id the resend of a stored job? The answer goes back to the core.
      [=](lookup_atom, core::request_lookup& l) {
        auto found = self->state.db->find_request(l.client_id, l.request_id);
        core::request_found answer{l.identity, l.request_id, std::nullopt, found ? l.refusal : found.err(), l.client_id};
        if (found)
          answer.job = std::move(found.value());
        self->send(caf::actor_cast<caf::actor>(self->current_sender()), std::move(answer));
      },
  };
}

} // namespace

caf::actor spawn_status_reader(caf::actor_system& sys, std::string url) {
  return sys.spawn<caf::detached>(status_reader, std::move(url));
}

} // namespace haca::actors
