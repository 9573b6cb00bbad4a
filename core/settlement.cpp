#include "core/settlement.hpp"

#include <algorithm>
#include <utility>
#include <vector>

#include "verify/merkle.hpp"

namespace haca::core {
namespace {

constexpr time_us us_of_ms(std::int64_t ms) { return ms * 1000; }

std::string job_list(const std::vector<std::int64_t>& ids) {
  std::string out;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (i == 8) {
      out += " and " + std::to_string(ids.size() - i) + " more";
      break;
    }
    out += (i ? ", " : "") + std::to_string(ids[i]);
  }
  return out;
}

// A judged job as the block will settle it (its SETTLED step is the one after its verdict).
settled_item item_of(judged_job j) {
  settled_item item;
  item.job_id = j.job_id;
  item.attempt = j.attempt;
  item.seq = j.seq + 1;
  item.verdict = j.verdict;
  item.client_id = std::move(j.client_id);
  item.receipt = std::move(j.receipt);
  item.ruling = std::move(j.ruling);
  return item;
}

} // namespace

settlement_core::settlement_core(settlement_config cfg, std::int64_t next_height, std::string prev_hash)
    : cfg_(std::move(cfg)), next_height_(next_height), prev_hash_(std::move(prev_hash)) {
  if (cfg_.batch_size < 1)
    cfg_.batch_size = 1;
  if (cfg_.batch_ms < 0)
    cfg_.batch_ms = 0;
}

settlement_core settlement_core::recover(settlement_config cfg, const snapshot& s, time_us now) {
  if (s.fee_bps)
    cfg.fee_bps = *s.fee_bps; // an operator's, over the config file's
  settlement_core c(std::move(cfg), s.next_height, s.prev_hash);
  effects ignored; // nothing is sealed here: the first step does it
  for (const auto& j : s.open_jobs) {
    if (j.state != job_state::verified && j.state != job_state::unsampled && j.state != job_state::disputed)
      continue;
    if (!j.result)
      continue; // cannot be settled without its receipt; the store never writes one without
    judged_job e;
    e.job_id = j.spec.id;
    e.attempt = j.attempt;
    e.seq = j.seq;
    e.client_id = j.spec.client_id;
    e.receipt = j.result->receipt;
    e.verdict = j.state;
    e.ruling = j.ruling;
    if (c.known_.insert(e.job_id).second) {
      // It has waited since it was judged (not later than now): a partial batch of recovered
      // jobs is due at once when that was batch_ms ago.
      const time_us arrived = j.updated_us > 0 && j.updated_us < now ? j.updated_us : now;
      c.buffer_.push_back(c.ready(item_of(std::move(e)), arrived));
    }
  }
  return c;
}

effects settlement_core::step(const settlement_event& ev, time_us now) {
  effects out;
  std::visit([&](const auto& e) { on(e, now, out); }, ev);
  out.wake_at_us = next_wake();
  return out;
}

void settlement_core::on(const judged_job& e, time_us now, effects& out) {
  if (!legal(e.verdict, job_state::settled)) {
    out.errors.push_back("settlement: job " + std::to_string(e.job_id) + ": illegal transition " +
                         state_name(e.verdict) + " -> SETTLED; not settled");
    return;
  }
  if (e.verdict != job_state::disputed && e.receipt.price < 0) {
    out.errors.push_back("settlement: job " + std::to_string(e.job_id) + " has a negative price " +
                         std::to_string(e.receipt.price) + "; not settled");
    return;
  }
  if (!known_.insert(e.job_id).second) {
    out.notes.push_back("settlement: job " + std::to_string(e.job_id) + " arrived again; already settling");
    return;
  }
  buffer_.push_back(ready(item_of(e), now));
  maybe_seal(now, out);
}

void settlement_core::maybe_seal(time_us now, effects& out) {
  if (stopped_ || in_flight_ || buffer_.empty())
    return;
  if (buffer_.size() >= cfg_.batch_size || now - buffer_.front().arrived_us >= us_of_ms(cfg_.batch_ms))
    seal(now, out);
}

settlement_core::waiting settlement_core::ready(settled_item item, time_us arrived) const {
  item.charged = 0;
  item.postings.clear();
  if (item.verdict != job_state::disputed) {
    item.charged = item.receipt.price;
    item.postings =
        market::settlement_postings(item.client_id, item.receipt.provider_key, item.receipt.price, cfg_.fee_bps);
  } // disputed: refunded, nothing charged, no postings
  std::string leaf = verify::receipt_hash(item.receipt);
  return waiting{std::move(item), arrived, std::move(leaf), cfg_.fee_bps};
}

void settlement_core::seal(time_us now, effects& out) {
  const std::size_t n = std::min(cfg_.batch_size, buffer_.size());
  block_commit bc;
  sealed_block sealed;
  std::vector<std::string> leaves;
  bc.items.reserve(n);
  sealed.arrived.reserve(n);
  leaves.reserve(n);
  micros total = 0;
  for (std::size_t i = 0; i < n; ++i) {
    waiting w = buffer_.front().fee_bps == cfg_.fee_bps
                    ? std::move(buffer_.front())
                    : ready(std::move(buffer_.front().item), buffer_.front().arrived_us); // the fee changed
    buffer_.pop_front();
    total += w.item.charged;
    bc.items.push_back(std::move(w.item));
    sealed.arrived.push_back(w.arrived_us);
    leaves.push_back(std::move(w.leaf));
  }
  auto& b = bc.block;
  b.height = next_height_;
  b.prev_hash = prev_hash_;
  b.batch_root = verify::merkle_root(leaves);
  b.receipts = static_cast<std::int32_t>(n);
  b.total_amount = total;
  b.created_at_us = now;
  bc.fee_bps = cfg_.fee_bps;
  verify::sign_block(b, cfg_.key);
  bc.block_hash = verify::block_hash(b);
  sealed.height = b.height;
  sealed.block_hash = bc.block_hash;
  in_flight_ = std::move(sealed);
  out.records.push_back(std::move(bc));
}

void settlement_core::on(const committed& e, time_us now, effects& out) {
  if (e.records.size() != e.outcomes.size())
    out.errors.push_back("settlement: a commit confirmation with " + std::to_string(e.records.size()) +
                         " records and " + std::to_string(e.outcomes.size()) +
                         " outcomes; the unmatched records stay unconfirmed");
  const std::size_t n = std::min(e.records.size(), e.outcomes.size());
  for (std::size_t i = 0; i < n; ++i) {
    const auto* bc = std::get_if<block_commit>(&e.records[i]);
    if (!bc)
      continue;
    if (!in_flight_ || bc->block_hash != in_flight_->block_hash) {
      out.notes.push_back("settlement: commit of block " + std::to_string(bc->block.height) +
                          " that is not in flight; ignored");
      continue;
    }
    const outcome& o = e.outcomes[i];
    const std::int64_t height = in_flight_->height;
    if (o.what != outcome::kind::rejected) {
      // ok (a duplicate is the same block stored before: ok too)
      ++next_height_;
      prev_hash_ = in_flight_->block_hash;
      for (const auto& item : bc->items) {
        micros earned = 0;
        const auto provider = market::provider_account(item.receipt.provider_key);
        for (const auto& p : item.postings)
          if (p.account == provider)
            earned += p.amount;
        out.to_execution.push_back(settled_job{item.job_id, item.client_id, item.charged, item.receipt.provider_key,
                                               item.verdict, item.receipt.price, earned, item.ruling});
        known_.erase(item.job_id);
      }
      in_flight_.reset();
      continue;
    }
    // Rejected. The items it names are set aside; the rest are sealed again at this height.
    std::set<std::int64_t> bad(o.bad_jobs.begin(), o.bad_jobs.end());
    std::vector<std::int64_t> named;
    for (const auto& item : bc->items)
      if (bad.count(item.job_id))
        named.push_back(item.job_id);
    if (named.empty()) {
      stopped_ = true;
      out.errors.push_back("settlement: block " + std::to_string(height) + " (" +
                           in_flight_->block_hash.substr(0, 16) + ") rejected for no item: " + o.reason +
                           "; a fork or a broken store: settlement stops");
      continue;
    }
    out.errors.push_back("settlement: block " + std::to_string(height) + " rejected (" + o.reason + "); " +
                         std::to_string(named.size()) + " jobs set aside: " + job_list(named) +
                         "; the rest are sealed again at height " + std::to_string(height));
    set_aside_ += named.size();
    const auto& items = bc->items;
    for (std::size_t k = items.size(); k-- > 0;) {
      const auto& item = items[k];
      if (bad.count(item.job_id)) {
        known_.erase(item.job_id);
        continue;
      }
      const time_us arrived = k < in_flight_->arrived.size() ? in_flight_->arrived[k] : now;
      buffer_.push_front(ready(item, arrived));
    }
    in_flight_.reset();
  }
  maybe_seal(now, out);
}

// An operator's new fee: the blocks sealed from now on charge it.
void settlement_core::on(const admin_action& a, time_us, effects&) {
  if (a.what == admin_action::kind::fee)
    cfg_.fee_bps = static_cast<int>(a.value);
}

void settlement_core::on(const tick&, time_us now, effects& out) { maybe_seal(now, out); }

time_us settlement_core::next_wake() const {
  if (stopped_ || in_flight_ || buffer_.empty())
    return 0;
  return buffer_.front().arrived_us + us_of_ms(cfg_.batch_ms);
}

} // namespace haca::core
