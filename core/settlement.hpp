#pragma once
// The settlement core: judged jobs are batched (by size or time) into a block: the ledger
// postings of each job, the Merkle root of the receipts, the signed block chained to the one
// before. Each job is made ready as it arrives (postings, Merkle leaf), while the block before
// is written; sealing only orders, roots and signs. One block is in flight at a time and is
// retried unchanged until its commit is confirmed (a block is idempotent by height and hash),
// so the chain never forks; a block the store rejects is rebuilt without the items that made
// it fail, which are set aside and logged.
// A block rejected for no item (a fork: another block holds its height, or a broken store)
// stops sealing: the core keeps it in flight and reports it, so the process can fail fast.
//
// After `recover`, call step(tick{}, now) once: it seals the recovered jobs that are due and
// arms the timer.
#include <cstdint>
#include <deque>
#include <optional>
#include <set>
#include <string>
#include <variant>

#include "core/events.hpp"
#include "verify/signing.hpp"

namespace haca::core {

struct settlement_config {
  std::size_t batch_size = 256;       // receipts per block at most
  std::int64_t batch_ms = 200;        // a partial batch waits at most this long
  int fee_bps = 500;
  verify::key_pair key;               // signs blocks
};

using settlement_event = std::variant<judged_job, committed, admin_action, tick>;

class settlement_core {
public:
  explicit settlement_core(settlement_config cfg, std::int64_t next_height = 0,
                           std::string prev_hash = std::string(64, '0'));
  // Judged jobs of the snapshot (verified, unsampled, disputed) settle in the next blocks.
  static settlement_core recover(settlement_config cfg, const snapshot& s, time_us now);

  effects step(const settlement_event& ev, time_us now);

  std::int64_t next_height() const { return next_height_; }
  const std::string& prev_hash() const { return prev_hash_; }
  std::size_t backlog() const { return buffer_.size() + (in_flight_ ? in_flight_->arrived.size() : 0); }
  std::size_t set_aside() const { return set_aside_; }
  // Read-only views for tests, the simulator and metrics.
  std::size_t buffered() const { return buffer_.size(); }
  // The block in flight: the store has it (its records carry its items) and its confirmation
  // is matched against it by hash.
  struct sealed_block {
    std::int64_t height = 0;
    std::string block_hash;
    std::vector<time_us> arrived; // of each item (back to the buffer as it was if rejected)
  };
  const std::optional<sealed_block>& in_flight() const { return in_flight_; }
  bool stopped() const { return stopped_; } // a block was rejected for no item: nothing more is sealed
  int fee_bps() const { return cfg_.fee_bps; }

private:
  // A judged job made ready to settle when it arrives, while a block is in flight: its item
  // (postings at the fee of that time: sealed under another fee, they are made again) and
  // its receipt's hash, its Merkle leaf. Sealing then only orders, roots and signs.
  struct waiting {
    settled_item item;
    time_us arrived_us = 0;
    std::string leaf;
    int fee_bps = 0;
  };
  waiting ready(settled_item item, time_us arrived) const;

  void on(const judged_job& e, time_us now, effects& out);
  void on(const committed& e, time_us now, effects& out);
  void on(const admin_action& e, time_us now, effects& out);
  void on(const tick& e, time_us now, effects& out);
  void maybe_seal(time_us now, effects& out);
  void seal(time_us now, effects& out);
  time_us next_wake() const;

  settlement_config cfg_;
  std::deque<waiting> buffer_;        // oldest first; its front's arrival times the batch
  std::optional<sealed_block> in_flight_;
  std::set<std::int64_t> known_;      // job ids buffered or in flight
  std::int64_t next_height_ = 0;
  std::string prev_hash_;
  std::size_t set_aside_ = 0;
  bool stopped_ = false;
};

} // namespace haca::core
