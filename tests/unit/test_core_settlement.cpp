// The settlement core as a pure state machine: batching by size and time, postings, the
// signed hash chain, one block in flight, rejected blocks and recovery. Receipts and blocks are
// really signed.
#include <doctest/doctest.h>

#include <set>
#include <string>
#include <vector>

#include "core/settlement.hpp"
#include "core_fixtures.hpp"
#include "market/ledger.hpp"
#include "verify/hash.hpp"
#include "verify/merkle.hpp"
#include "verify/receipt.hpp"
#include "verify/signing.hpp"

using namespace haca;
using namespace haca::core;
using namespace haca::test;

namespace {

const verify::key_pair& provider_key() {
  static const verify::key_pair k = verify::generate_key_pair();
  return k;
}

judged_job judged(std::int64_t job_id, job_state verdict = job_state::verified, std::int64_t price = 1000,
                  std::int32_t seq = 5) {
  judged_job j;
  j.job_id = job_id;
  j.attempt = 1;
  j.seq = seq;
  j.client_id = "client-" + std::to_string(job_id % 3);
  j.receipt = signed_receipt(job_id, provider_key(), price);
  REQUIRE(verify::verify_receipt(j.receipt));
  j.verdict = verdict;
  return j;
}

settlement_config config(std::size_t batch_size = 4, std::int64_t batch_ms = 200) {
  settlement_config c;
  c.batch_size = batch_size;
  c.batch_ms = batch_ms;
  c.fee_bps = 500;
  c.key = verify::generate_key_pair();
  return c;
}

std::vector<block_commit> blocks(const effects& e) {
  std::vector<block_commit> out;
  for (const auto& r : e.records)
    if (const auto* b = std::get_if<block_commit>(&r))
      out.push_back(*b);
  return out;
}

committed confirm(const block_commit& b, outcome o = {}) {
  committed c;
  c.records.push_back(b);
  c.outcomes.push_back(std::move(o));
  return c;
}

outcome rejected(std::vector<std::int64_t> bad, std::string reason) {
  outcome o;
  o.what = outcome::kind::rejected;
  o.reason = std::move(reason);
  o.bad_jobs = std::move(bad);
  return o;
}

std::vector<std::int64_t> item_ids(const block_commit& b) {
  std::vector<std::int64_t> out;
  for (const auto& i : b.items)
    out.push_back(i.job_id);
  return out;
}

// Every check a reader of the chain can make on one block by itself.
void check_block(const block_commit& bc, const verify::key_pair& key) {
  CHECK(verify::verify_block(bc.block));
  CHECK(bc.block.signer_key == key.public_key_hex);
  CHECK(bc.block_hash == verify::block_hash(bc.block));
  std::vector<std::string> leaves;
  micros total = 0;
  for (const auto& item : bc.items) {
    leaves.push_back(verify::receipt_hash(item.receipt));
    total += item.charged;
    CHECK(market::balanced(item.postings));
  }
  CHECK(bc.block.batch_root == verify::merkle_root(leaves));
  CHECK(bc.block.receipts == static_cast<std::int32_t>(bc.items.size()));
  CHECK(bc.block.total_amount == total);
}

} // namespace

TEST_CASE("settlement blocks chain: each names the hash of the one before and heights count up") {
  const auto cfg = config(2);
  settlement_core c(cfg);
  std::string prev = std::string(64, '0');
  std::set<std::string> hashes;
  for (int h = 0; h < 4; ++h) {
    c.step(judged(10 * h + 1), t0 + h);
    auto e = c.step(judged(10 * h + 2), t0 + h);
    auto bs = blocks(e);
    REQUIRE(bs.size() == 1);
    CHECK(bs[0].block.height == h);
    CHECK(bs[0].block.prev_hash == prev);
    CHECK(bs[0].block.created_at_us == t0 + h);
    check_block(bs[0], cfg.key);
    hashes.insert(bs[0].block_hash);
    auto done = c.step(confirm(bs[0]), t0 + h);
    CHECK(done.to_execution.size() == 2);
    CHECK(c.next_height() == h + 1);
    CHECK(c.prev_hash() == bs[0].block_hash);
    prev = bs[0].block_hash;
  }
  CHECK(hashes.size() == 4);
}

TEST_CASE("settlement seals a full batch at once and a partial one after batch_ms") {
  const auto cfg = config(3, 200);
  settlement_core c(cfg);
  auto e1 = c.step(judged(1), t0);
  CHECK(blocks(e1).empty());
  CHECK(e1.wake_at_us == t0 + 200 * ms);
  auto e2 = c.step(judged(2), t0 + 50 * ms);
  CHECK(blocks(e2).empty());
  CHECK(e2.wake_at_us == t0 + 200 * ms); // the oldest job sets the clock
  CHECK(blocks(c.step(tick{}, t0 + 199 * ms)).empty());
  auto due = c.step(tick{}, t0 + 200 * ms);
  auto bs = blocks(due);
  REQUIRE(bs.size() == 1);
  CHECK(item_ids(bs[0]) == std::vector<std::int64_t>{1, 2});
  CHECK(due.wake_at_us == 0); // a block in flight, nothing buffered
  c.step(confirm(bs[0]), t0 + 201 * ms);

  // By size: the third job of a batch seals it without waiting.
  c.step(judged(3), t0 + 300 * ms);
  c.step(judged(4), t0 + 300 * ms);
  auto full = c.step(judged(5), t0 + 300 * ms);
  auto fb = blocks(full);
  REQUIRE(fb.size() == 1);
  CHECK(item_ids(fb[0]) == std::vector<std::int64_t>{3, 4, 5});
  CHECK(fb[0].block.height == 1);
}

TEST_CASE("settled items carry balanced postings, the settled seq and a block total of what was charged") {
  const auto cfg = config(3);
  settlement_core c(cfg);
  c.step(judged(1, job_state::verified, 1000, 5), t0);
  c.step(judged(2, job_state::unsampled, 333, 7), t0);
  auto e = c.step(judged(3, job_state::verified, 10001, 9), t0);
  auto bs = blocks(e);
  REQUIRE(bs.size() == 1);
  const auto& items = bs[0].items;
  REQUIRE(items.size() == 3);
  CHECK(items[0].seq == 6);
  CHECK(items[1].seq == 8);
  CHECK(items[2].seq == 10);
  CHECK(items[1].verdict == job_state::unsampled);
  CHECK(bs[0].block.total_amount == 1000 + 333 + 10001);
  for (const auto& item : items) {
    CHECK(market::balanced(item.postings));
    CHECK(item.charged == item.receipt.price);
    micros client = 0, provider = 0, fee = 0;
    for (const auto& p : item.postings) {
      if (p.account == market::client_account(item.client_id)) client += p.amount;
      if (p.account == market::provider_account(provider_key().public_key_hex)) provider += p.amount;
      if (p.account == market::fee_account) fee += p.amount;
    }
    CHECK(client == -item.receipt.price);
    CHECK(fee == (item.receipt.price * 500 + 9999) / 10000); // rounded up
    CHECK(provider == item.receipt.price - fee);
  }
  check_block(bs[0], cfg.key);
}

TEST_CASE("a disputed job is settled as a refund: nothing charged and no postings") {
  settlement_core c(config(2));
  c.step(judged(1, job_state::disputed, 5000), t0);
  auto e = c.step(judged(2, job_state::verified, 700), t0);
  auto bs = blocks(e);
  REQUIRE(bs.size() == 1);
  CHECK(bs[0].items[0].verdict == job_state::disputed);
  CHECK(bs[0].items[0].charged == 0);
  CHECK(bs[0].items[0].postings.empty());
  CHECK(bs[0].block.total_amount == 700);
  CHECK(bs[0].block.receipts == 2); // the refunded receipt is still in the batch root
  auto done = c.step(confirm(bs[0]), t0 + 1);
  REQUIRE(done.to_execution.size() == 2);
  CHECK(done.to_execution[0].job_id == 1);
  CHECK(done.to_execution[0].charged == 0);
  CHECK(done.to_execution[1].charged == 700);
}

TEST_CASE("settlement keeps one block in flight and hands jobs to execution only after it commits") {
  settlement_core c(config(1));
  auto e1 = c.step(judged(1), t0);
  REQUIRE(blocks(e1).size() == 1);
  CHECK(e1.to_execution.empty());
  auto e2 = c.step(judged(2), t0 + 1);
  CHECK(blocks(e2).empty()); // the first is not committed yet
  CHECK(blocks(c.step(tick{}, t0 + 10'000 * ms)).empty());
  CHECK(c.backlog() == 2);
  REQUIRE(c.in_flight().has_value());
  CHECK(c.in_flight()->height == 0);

  // A confirmation of some other block changes nothing.
  block_commit stranger = blocks(e1)[0];
  stranger.block_hash = std::string(64, 'f');
  auto odd = c.step(confirm(stranger), t0 + 2);
  CHECK(odd.to_execution.empty());
  CHECK(blocks(odd).empty());
  CHECK(c.next_height() == 0);

  auto done = c.step(confirm(blocks(e1)[0]), t0 + 3);
  REQUIRE(done.to_execution.size() == 1);
  CHECK(done.to_execution[0].job_id == 1);
  auto next = blocks(done);
  REQUIRE(next.size() == 1); // sealed again at once: the next one was due
  CHECK(next[0].block.height == 1);
  CHECK(next[0].block.prev_hash == blocks(e1)[0].block_hash);
  CHECK(item_ids(next[0]) == std::vector<std::int64_t>{2});
}

TEST_CASE("a rejected settlement block sets its bad items aside and seals the rest again at the same height") {
  const auto cfg = config(3);
  settlement_core c(cfg);
  c.step(judged(1), t0);
  c.step(judged(2), t0);
  auto e = c.step(judged(3), t0);
  auto bs = blocks(e);
  REQUIRE(bs.size() == 1);
  const auto first = bs[0];
  c.step(judged(4), t0 + 1); // waits behind the block in flight

  auto r = c.step(confirm(first, rejected({2}, "job 2 is already settled")), t0 + 2);
  CHECK(r.to_execution.empty());
  REQUIRE_FALSE(r.errors.empty());
  CHECK(r.errors[0].find('2') != std::string::npos);
  CHECK(r.errors[0].find("already settled") != std::string::npos);
  CHECK(c.set_aside() == 1);
  CHECK(c.next_height() == 0);
  CHECK(c.prev_hash() == std::string(64, '0'));
  auto again = blocks(r);
  REQUIRE(again.size() == 1); // 1, 3 and 4 make a full batch
  CHECK(again[0].block.height == 0);
  CHECK(again[0].block.prev_hash == std::string(64, '0'));
  CHECK(item_ids(again[0]) == std::vector<std::int64_t>{1, 3, 4});
  CHECK(again[0].block_hash != first.block_hash);
  check_block(again[0], cfg.key);

  auto ok = c.step(confirm(again[0]), t0 + 3);
  CHECK(ok.to_execution.size() == 3);
  CHECK(c.next_height() == 1);
  CHECK(c.prev_hash() == again[0].block_hash);
  CHECK(c.backlog() == 0);
}

TEST_CASE("a settlement block rejected for no item stops sealing so the process can fail fast") {
  settlement_core c(config(1));
  auto e = c.step(judged(1), t0);
  REQUIRE(blocks(e).size() == 1);
  c.step(judged(2), t0);
  auto r = c.step(confirm(blocks(e)[0], rejected({}, "height 0 holds another block")), t0 + 1);
  REQUIRE_FALSE(r.errors.empty());
  CHECK(r.errors[0].find("fork") != std::string::npos);
  CHECK(c.stopped());
  CHECK(c.in_flight().has_value());
  CHECK(blocks(r).empty());
  CHECK(blocks(c.step(tick{}, t0 + 10'000 * ms)).empty());
  CHECK(blocks(c.step(judged(3), t0 + 10'000 * ms)).empty());
  CHECK(c.next_height() == 0);
}

TEST_CASE("a job handed to settlement twice or with an illegal verdict is not settled twice") {
  settlement_core c(config(2));
  c.step(judged(1), t0);
  auto dup = c.step(judged(1), t0);
  CHECK(blocks(dup).empty());
  CHECK(c.buffered() == 1);
  auto bad = c.step(judged(9, job_state::executed), t0);
  CHECK_FALSE(bad.errors.empty());
  CHECK(c.buffered() == 1);
  auto e = c.step(judged(2), t0);
  REQUIRE(blocks(e).size() == 1);
  CHECK(item_ids(blocks(e)[0]) == std::vector<std::int64_t>{1, 2});
}

TEST_CASE("settlement recovery continues the chain from the snapshot with the judged jobs") {
  const auto cfg = config(8, 200);
  snapshot s;
  s.next_height = 7;
  s.prev_hash = verify::sha256_hex("block 6");
  const std::vector<std::pair<std::int64_t, job_state>> states = {
      {1, job_state::verified}, {2, job_state::unsampled}, {3, job_state::disputed},
      {4, job_state::executed}, {5, job_state::queued}};
  for (const auto& [id, st] : states) {
    stored_job sj;
    sj.spec.id = id;
    sj.spec.client_id = "client-" + std::to_string(id % 3);
    sj.state = st;
    sj.attempt = 1;
    sj.seq = static_cast<std::int32_t>(10 + id);
    sj.updated_us = t0;
    if (st != job_state::queued)
      sj.result = execution_result{{0}, {}, judged(id).receipt, {}};
    s.open_jobs.push_back(sj);
  }
  auto c = settlement_core::recover(cfg, s, t0 + 50 * ms);
  CHECK(c.next_height() == 7);
  CHECK(c.prev_hash() == s.prev_hash);
  CHECK(c.buffered() == 3);
  // They were judged at t0: due at t0 + batch_ms.
  auto early = c.step(tick{}, t0 + 50 * ms);
  CHECK(blocks(early).empty());
  CHECK(early.wake_at_us == t0 + 200 * ms);
  auto e = c.step(tick{}, t0 + 200 * ms);
  auto bs = blocks(e);
  REQUIRE(bs.size() == 1);
  CHECK(bs[0].block.height == 7);
  CHECK(bs[0].block.prev_hash == s.prev_hash);
  REQUIRE(item_ids(bs[0]) == std::vector<std::int64_t>{1, 2, 3});
  CHECK(bs[0].items[0].verdict == job_state::verified);
  CHECK(bs[0].items[1].verdict == job_state::unsampled);
  CHECK(bs[0].items[2].verdict == job_state::disputed);
  CHECK(bs[0].items[2].charged == 0);
  CHECK(bs[0].items[0].seq == 12);
  CHECK(bs[0].items[2].seq == 14);
  check_block(bs[0], cfg.key);
  c.step(confirm(bs[0]), t0 + 201 * ms);
  CHECK(c.next_height() == 8);
  CHECK(c.prev_hash() == bs[0].block_hash);
}

TEST_CASE("an operator's fee applies to the blocks sealed after it, and recovery keeps it") {
  const auto cfg = config(1);
  settlement_core c(cfg);
  admin_action fee;
  fee.what = admin_action::kind::fee;
  fee.value = 2000;
  c.step(fee, t0);
  CHECK(c.fee_bps() == 2000);
  auto bs = blocks(c.step(judged(1, job_state::verified, 1000), t0));
  REQUIRE(bs.size() == 1);
  micros charged_fee = 0;
  for (const auto& p : bs[0].items.at(0).postings)
    if (p.account == market::fee_account)
      charged_fee += p.amount;
  CHECK(charged_fee == 200);
  snapshot s;
  s.fee_bps = 42;
  CHECK(settlement_core::recover(cfg, s, t0).fee_bps() == 42);

  // A job that waited (made ready at the old fee) is sealed after the change: the new fee.
  settlement_core w(config(2));
  CHECK(blocks(w.step(judged(2, job_state::verified, 1000), t0)).empty()); // buffered at 500 bps
  w.step(fee, t0 + 1);
  auto later = blocks(w.step(judged(3, job_state::verified, 1000), t0 + 2));
  REQUIRE(later.size() == 1);
  REQUIRE(later[0].items.size() == 2);
  CHECK(later[0].fee_bps == 2000);
  for (const auto& item : later[0].items) {
    micros f = 0;
    for (const auto& p : item.postings)
      if (p.account == market::fee_account)
        f += p.amount;
    CHECK_MESSAGE(f == 200, "job ", item.job_id);
  }
}
