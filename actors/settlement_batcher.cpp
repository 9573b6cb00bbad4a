// settlement_batcher: groups final jobs into batches (by size or time), prices them with the
// ledger rules, builds the batch's Merkle root and a signed block chained to the previous one,
// and has the store commit all of it in one transaction. One batch in flight keeps the chain
// in order.
#include <deque>

#include <spdlog/spdlog.h>

#include "actors/coordinator.hpp"
#include "verify/merkle.hpp"

namespace haca::actors {
namespace {

struct settlement_state {
  coordinator_config cfg;
  peers p;
  std::deque<final_job> buffer;
  std::int64_t next_height = 0;
  std::string prev_hash;
  bool in_flight = false;
  bool timer_armed = false;
  static inline const char* name = "settlement_batcher";
};

using self_ptr = caf::stateful_actor<settlement_state>*;

void arm_timer(self_ptr self) {
  if (!self->state.timer_armed) {
    self->state.timer_armed = true;
    self->delayed_send(self, std::chrono::milliseconds(self->state.cfg.batch_ms), tick_atom::value);
  }
}

void flush(self_ptr self) {
  auto& st = self->state;
  if (st.in_flight || st.buffer.empty())
    return;
  std::vector<final_job> jobs;
  while (!st.buffer.empty() && jobs.size() < st.cfg.batch_size) {
    jobs.push_back(std::move(st.buffer.front()));
    st.buffer.pop_front();
  }
  db::settlement batch;
  std::vector<std::string> leaves;
  for (const auto& j : jobs) {
    leaves.push_back(verify::receipt_hash(j.receipt));
    db::settled_item item{j.job_id, j.client_id, j.receipt, j.verdict, {}};
    if (j.verdict != "mismatch") { // a disputed job is not charged (refund)
      item.postings = market::settlement_postings(j.client_id, j.receipt.provider_key, j.receipt.price, st.cfg.fee_bps);
      batch.block.total_amount += j.receipt.price;
    }
    batch.items.push_back(std::move(item));
  }
  auto& b = batch.block;
  b.height = st.next_height;
  b.prev_hash = st.prev_hash;
  b.batch_root = verify::merkle_root(leaves);
  b.receipts = static_cast<std::int32_t>(jobs.size());
  b.created_at_us = now_us();
  verify::sign_block(b, st.cfg.key);
  auto hash = verify::block_hash(b);
  st.in_flight = true;
  self->request(st.p.store, store_timeout, db::operation{db::settle{std::move(batch)}})
      .then(
          [=](store_reply& reply) mutable {
            auto& st = self->state;
            st.in_flight = false;
            if (!reply) {
              spdlog::error("settlement: block {} not committed: {}; retrying", st.next_height, reply.err().reason);
              for (auto it = jobs.rbegin(); it != jobs.rend(); ++it)
                st.buffer.push_front(std::move(*it));
              arm_timer(self);
              return;
            }
            spdlog::debug("settlement: block {} with {} receipts", st.next_height, jobs.size());
            ++st.next_height;
            st.prev_hash = hash;
            self->send(st.p.job_queue, settled_atom::value, jobs);
            if (st.buffer.size() >= st.cfg.batch_size)
              flush(self);
            else if (!st.buffer.empty())
              arm_timer(self);
          },
          [=](caf::error& e) mutable {
            auto& st = self->state;
            st.in_flight = false;
            spdlog::error("settlement: store did not answer ({}); retrying", self->system().render(e));
            for (auto it = jobs.rbegin(); it != jobs.rend(); ++it)
              st.buffer.push_front(std::move(*it));
            arm_timer(self);
          });
}

caf::behavior settlement_batcher(self_ptr self, coordinator_config cfg) {
  auto& st = self->state;
  st.cfg = std::move(cfg);
  st.next_height = st.cfg.ledger_head.next_height;
  st.prev_hash = st.cfg.ledger_head.prev_hash;
  return {
      [=](peers_atom, const peers& p) { self->state.p = p; },
      [=](final_atom, final_job& job) {
        self->state.buffer.push_back(std::move(job));
        if (self->state.buffer.size() >= self->state.cfg.batch_size)
          flush(self);
        else
          arm_timer(self);
      },
      [=](tick_atom) {
        self->state.timer_armed = false;
        flush(self);
        if (!self->state.buffer.empty())
          arm_timer(self);
      },
  };
}

} // namespace

caf::actor spawn_settlement_batcher(caf::actor_system& sys, const coordinator_config& cfg) {
  return sys.spawn(settlement_batcher, cfg);
}

} // namespace haca::actors
