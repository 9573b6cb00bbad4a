// bench_settlement: receipts settled per second through haca's settlement path into Postgres
// (the settlement core seals signed blocks of 256 on one thread, the store writes each block in
// one statement on another, as the two actors do: the block row with its members, one array
// UPDATE of their job rows, one posting per account and memo), beside row-by-row baselines in
// the same run:
//  - the baseline: each receipt settled alone as it is judged, a block of one in its own
//    transaction, one statement per row;
//  - the same blocks of 256 as haca's, one statement per row, one transaction per block (what
//    the array statements alone gain).
//
// All run on a scratch database made for the run (migrated like the real ones, dropped at the
// end) and settle executed jobs seeded through the store's own write path, with really signed
// receipts. `haca audit` rules (db::audit) then check the chain and the ledger the run left.
//
// Targets (issue "Trust that holds against cheaters", item 8): >= 100k receipts/s and >= 50x
// the baseline.
#include <pqxx/pqxx>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

#include <fmt/format.h>

#include "core/settlement.hpp"
#include "db/audit.hpp"
#include "db/scratch.hpp"
#include "db/store.hpp"
#include "verify/hash.hpp"

using namespace haca;
using clock_type = std::chrono::steady_clock;

namespace {

struct options {
  std::string base_db = "postgresql:///haca_test"; // the scratch database is made next to it
  int blocks = 200;          // settled through haca's path
  int baseline_blocks = 10;  // haca's rows written row by row
  int baseline_receipts = 2000; // settled one at a time, row by row
  std::size_t batch = 256;   // receipts per block
  bool keep = false;
};

double seconds_since(clock_type::time_point t) {
  return std::chrono::duration<double>(clock_type::now() - t).count();
}

void must_commit(db::store& store, const std::vector<core::record>& records, const char* what) {
  auto r = store.apply(records);
  if (auto* t = std::get_if<db::transient_error>(&r))
    throw std::runtime_error(fmt::format("{}: {}", what, t->reason));
  for (const auto& o : std::get<std::vector<core::outcome>>(r))
    if (o.what == core::outcome::kind::rejected)
      throw std::runtime_error(fmt::format("{}: a record was rejected: {}", what, o.reason));
}

// `count` jobs from `first_id`, stored EXECUTED with signed receipts through the store's write
// path (haca_write), as the execution core leaves them. Returns them judged, ready to settle:
// one in ten VERIFIED, the rest UNSAMPLED (recorded with the block, as the verification core does).
std::vector<core::judged_job> seed(db::store& store, std::int64_t first_id, std::size_t count,
                                   const verify::key_pair& provider) {
  std::vector<core::judged_job> judged;
  const auto model = verify::sha256_hex("bench model");
  const core::time_us t0 = 1'700'000'000'000'000;
  std::vector<core::record> records;
  for (std::size_t i = 0; i < count; ++i) {
    const std::int64_t id = first_id + static_cast<std::int64_t>(i);
    core::job_spec s;
    s.id = id;
    s.client_id = "bench-client";
    s.request_id = "r" + std::to_string(id);
    s.model = model;
    s.tier = "sampled";
    s.max_price = 100;
    s.input.type = kernels::dtype::i8;
    s.input.shape = {1, 16};
    s.input.data.assign(16, static_cast<char>(id));
    s.input_hash = verify::sha256_hex(s.input.data);
    s.submitted_us = t0 + id;
    core::execution_result res;
    res.output.type = kernels::dtype::i8;
    res.output.shape = {1, 10};
    res.output.data.assign(10, static_cast<char>(id * 7));
    res.classes = {0};
    auto& r = res.receipt;
    r.job_id = id;
    r.model_hash = model;
    r.input_hash = s.input_hash;
    r.output_hash = verify::sha256_hex(res.output.data);
    r.trace_root = verify::sha256_hex("trace " + std::to_string(id));
    r.price = 10 + id % 50;
    r.attempt = 0;
    r.started_at_us = t0 + id;
    r.finished_at_us = t0 + id + 100;
    verify::sign_receipt(r, provider);
    const bool verified = id % 10 == 0;
    judged.push_back({id, 0, 4, s.client_id, r, verified ? core::job_state::verified
                                                                        : core::job_state::unsampled,
                      {}});
    records.push_back(core::job_insert{std::move(s)});
    core::job_transition a{id, 2, core::job_state::queued, core::job_state::assigned, 0, provider.public_key_hex,
                           r.price, "bench", t0 + id, std::nullopt};
    core::job_transition e{id, 3, core::job_state::assigned, core::job_state::executed, 0, "", 0, "", t0 + id + 100,
                           std::move(res)};
    records.push_back(std::move(a));
    records.push_back(std::move(e));
    if (verified)
      records.push_back(core::job_transition{id, 4, core::job_state::executed, core::job_state::verified, 0, "", 0,
                                             "bench verifier", t0 + id + 200, std::nullopt});
    if (records.size() >= 3000) {
      must_commit(store, records, "seeding jobs");
      records.clear();
    }
  }
  if (!records.empty())
    must_commit(store, records, "seeding jobs");
  return judged;
}

// A queue between two threads, as a mailbox is between two actors.
template <class T>
class mailbox {
public:
  void put(T v) {
    {
      std::lock_guard lock(m_);
      q_.push_back(std::move(v));
    }
    cv_.notify_one();
  }
  T take() {
    std::unique_lock lock(m_);
    cv_.wait(lock, [&] { return !q_.empty(); });
    T v = std::move(q_.front());
    q_.pop_front();
    return v;
  }
  std::optional<T> try_take() {
    std::lock_guard lock(m_);
    if (q_.empty())
      return std::nullopt;
    T v = std::move(q_.front());
    q_.pop_front();
    return v;
  }

private:
  std::mutex m_;
  std::condition_variable cv_;
  std::deque<T> q_;
};

// The settlement path as the coordinator runs it: the settlement core on this thread (the
// settlement_batcher actor), the store on another (the store actor). Judged jobs come in
// hand-offs of 64 (as from the verifier pool); each block the core seals goes to the store
// thread, and its commit comes back to the core. So the core takes in (and hashes) the next
// jobs while the store writes a block, as the actors do. Returns seconds from the first job
// to the last block's commit.
double settle_with_haca(db::store& store, core::settlement_core& core, const std::vector<core::judged_job>& jobs) {
  constexpr std::size_t handoff = 64;
  mailbox<std::optional<std::vector<core::record>>> to_store; // nullopt: stop
  mailbox<core::committed> to_core;
  std::string store_failure;
  std::thread store_thread([&] {
    while (auto records = to_store.take()) {
      auto applied = store.apply(*records);
      if (auto* t = std::get_if<db::transient_error>(&applied)) {
        store_failure = "settling: " + t->reason;
        to_core.put(core::committed{});
        return;
      }
      to_core.put(core::committed{std::move(*records), std::get<std::vector<core::outcome>>(applied)});
    }
  });
  core::time_us now = 1'800'000'000'000'000;
  std::size_t blocks_out = 0;
  auto carry_out = [&](core::effects fx) {
    if (!fx.errors.empty())
      throw std::runtime_error("settling: " + fx.errors.front());
    if (!fx.records.empty()) {
      ++blocks_out;
      to_store.put(std::move(fx.records));
    }
  };
  auto confirm = [&](core::committed c) {
    --blocks_out;
    if (!store_failure.empty())
      throw std::runtime_error(store_failure);
    for (const auto& o : c.outcomes)
      if (o.what == core::outcome::kind::rejected)
        throw std::runtime_error("settling: a block was rejected: " + o.reason);
    carry_out(core.step(c, ++now));
  };
  const auto started = clock_type::now();
  try {
    for (std::size_t i = 0; i < jobs.size(); i += handoff) {
      for (std::size_t k = i; k < std::min(jobs.size(), i + handoff); ++k)
        carry_out(core.step(jobs[k], ++now));
      while (auto c = to_core.try_take())
        confirm(std::move(*c));
    }
    carry_out(core.step(core::tick{}, now + 10'000'000)); // the last partial batch
    while (blocks_out > 0 || core.backlog() > 0)
      confirm(to_core.take());
  } catch (...) {
    to_store.put(std::nullopt);
    store_thread.join();
    throw;
  }
  const double took = seconds_since(started);
  to_store.put(std::nullopt);
  store_thread.join();
  return took;
}

// Blocks sealed (hashed, signed) before a baseline's clock starts: sealing is not what the
// baselines compare.
std::vector<core::block_commit> seal_all(core::settlement_core& core, const std::vector<core::judged_job>& jobs,
                                         core::time_us now) {
  std::vector<core::block_commit> blocks;
  std::deque<core::effects> pending;
  for (const auto& j : jobs)
    pending.push_back(core.step(j, ++now));
  pending.push_back(core.step(core::tick{}, now + 10'000'000));
  while (!pending.empty()) {
    auto e = std::move(pending.front());
    pending.pop_front();
    for (auto& r : e.records)
      if (auto* b = std::get_if<core::block_commit>(&r)) {
        blocks.push_back(*b);
        core::committed ok{{r}, {core::outcome{}}};
        pending.push_back(core.step(ok, ++now));
      }
  }
  return blocks;
}

std::string pg_array(const std::vector<std::string>& items) {
  std::string out = "{";
  for (std::size_t i = 0; i < items.size(); ++i)
    out += (i ? "," : "") + items[i];
  return out + "}";
}

// The rows haca's path writes for these blocks, one statement per row: the block row, each
// job's row, each posting and each account credit; one transaction per block.
double write_row_by_row(pqxx::connection& c, const std::vector<core::block_commit>& blocks) {
  const auto started = clock_type::now();
  for (const auto& bc : blocks) {
    pqxx::work tx{c};
    const auto& b = bc.block;
    std::vector<std::string> ids;
    for (const auto& it : bc.items)
      ids.push_back(std::to_string(it.job_id));
    tx.exec_params("insert into blocks (height, prev_hash, batch_root, receipts, total_amount, block_hash, signer_key, "
                   "signature, created_at, fee_bps, job_ids) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, "
                   "$11::bigint[])",
                   b.height, b.prev_hash, b.batch_root, b.receipts, b.total_amount, bc.block_hash, b.signer_key,
                   b.signature, b.created_at_us, bc.fee_bps, pg_array(ids));
    int index = 0;
    std::map<std::pair<std::string, std::string>, std::int64_t> per_account;
    for (const auto& it : bc.items) {
      tx.exec_params("update jobs set state = 'SETTLED', seq = $2, attempt = $3, updated_at = now(), block_height = "
                     "$4, block_index = $5, verdict = $6 where id = $1",
                     it.job_id, it.seq, it.attempt, b.height, index++,
                     it.verdict == core::job_state::verified ? "verified" : "unsampled");
      for (const auto& p : it.postings)
        per_account[{p.account, p.memo}] += p.amount;
    }
    for (const auto& [key, amount] : per_account) {
      tx.exec_params("insert into accounts (id, balance) values ($1, $2) on conflict (id) do update set balance = "
                     "accounts.balance + excluded.balance",
                     key.first, amount);
      tx.exec_params("insert into postings (block_height, account, amount, memo) values ($1, $2, $3, $4)", b.height,
                     key.first, amount, key.second);
    }
    tx.commit();
  }
  return seconds_since(started);
}

} // namespace

int main(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "bench_settlement: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--db") o.base_db = next();
    else if (a == "--blocks") o.blocks = std::stoi(next());
    else if (a == "--baseline-blocks") o.baseline_blocks = std::stoi(next());
    else if (a == "--baseline-receipts") o.baseline_receipts = std::stoi(next());
    else if (a == "--batch") o.batch = static_cast<std::size_t>(std::stoul(next()));
    else if (a == "--keep") o.keep = true;
    else {
      std::fprintf(stderr,
                   "usage: bench_settlement [--db BASE_URL] [--blocks N] [--batch RECEIPTS_PER_BLOCK] [--baseline-blocks N]\n"
                   "                        [--baseline-receipts N] [--keep]\n"
                   "  a scratch database is created next to BASE_URL (default postgresql:///haca_test)\n");
      return a == "--help" || a == "-h" ? 0 : 2;
    }
  }
  int rc = 0;
  std::optional<db::scratch_database> scratch;
  try {
    scratch.emplace(o.base_db, fmt::format("haca_bench_settle_{}", ::getpid()), HACA_SOURCE_DIR);
    if (o.keep)
      scratch->keep();
    const std::string& url = scratch->url();
    const std::string& name = scratch->name();
    std::printf("bench_settlement: scratch database %s, %u hardware threads\n", name.c_str(),
                std::thread::hardware_concurrency());

    const auto provider = verify::generate_key_pair();
    core::settlement_config cfg;
    cfg.batch_size = o.batch;
    cfg.batch_ms = 1'000'000; // blocks are sealed by size; the final tick seals the rest
    cfg.fee_bps = 500;
    cfg.key = verify::generate_key_pair();
    db::store store(url);

    const auto n = static_cast<std::size_t>(o.blocks) * o.batch;
    const auto nb = static_cast<std::size_t>(o.baseline_blocks) * o.batch;
    const auto nr = static_cast<std::size_t>(o.baseline_receipts);
    std::printf("seeding %zu + %zu + %zu executed jobs with signed receipts through the store ...\n", n, nb, nr);
    std::fflush(stdout);
    auto seed_started = clock_type::now();
    must_commit(store, {core::transfer{market::funding_postings("client:bench-client", 1'000'000'000, "faucet"), "faucet:bench-client", 0, 0}}, "funding the client");
    auto jobs = seed(store, 1, n, provider);
    auto block_jobs = seed(store, static_cast<std::int64_t>(n) + 1, nb, provider);
    auto receipt_jobs = seed(store, static_cast<std::int64_t>(n + nb) + 1, nr, provider);
    std::printf("seeded in %.1f s\n", seconds_since(seed_started));

    core::settlement_core haca_core(cfg);
    const double haca_s = settle_with_haca(store, haca_core, jobs);
    pqxx::connection c{url};
    core::settlement_core block_core(cfg, haca_core.next_height(), haca_core.prev_hash());
    const double block_s = write_row_by_row(c, seal_all(block_core, block_jobs, 1'900'000'000'000'000));
    auto one = cfg;
    one.batch_size = 1;
    core::settlement_core receipt_core(one, block_core.next_height(), block_core.prev_hash());
    const double receipt_s = write_row_by_row(c, seal_all(receipt_core, receipt_jobs, 2'000'000'000'000'000));

    const double haca_rate = static_cast<double>(n) / haca_s;
    const double block_rate = static_cast<double>(nb) / block_s;
    const double receipt_rate = static_cast<double>(nr) / receipt_s;
    std::printf("\nhaca settlement path (one transaction per block of %zu, array statements):\n", o.batch);
    std::printf("  %zu receipts in %d blocks: %.3f s, %.0f receipts/s (sealing, signing and writing)\n", n, o.blocks,
                haca_s, haca_rate);
    std::printf("baseline, row by row: each receipt settled alone (a block of one, one transaction, one statement "
                "per row):\n");
    std::printf("  %zu receipts: %.3f s, %.0f receipts/s (writing only)\n", nr, receipt_s, receipt_rate);
    std::printf("the same rows as haca's blocks of %zu, one statement per row, one transaction per block:\n", o.batch);
    std::printf("  %zu receipts in %d blocks: %.3f s, %.0f receipts/s (writing only)\n", nb, o.baseline_blocks,
                block_s, block_rate);
    std::printf("\nratio haca/baseline receipts/s: %.1f x (target >= 50: %s)\n", haca_rate / receipt_rate,
                haca_rate / receipt_rate >= 50 ? "met" : "not met");
    std::printf("ratio haca/same blocks row by row: %.1f x (what the array statements alone gain)\n",
                haca_rate / block_rate);
    std::printf("haca receipts/s: %.0f (target >= 100000: %s)\n", haca_rate, haca_rate >= 100000 ? "met" : "not met");

    auto a = db::audit(url, db::audit_options{"", 600, cfg.key.public_key_hex});
    if (!a) throw std::runtime_error("audit: " + a.err().reason);
    std::printf("audit of what all three wrote: %s (%lld blocks, %lld settled)\n",
                a->ok() ? "ok" : ("TROUBLE: " + a->problem).c_str(), static_cast<long long>(a->blocks),
                static_cast<long long>(a->settled));
    if (!a->ok()) rc = 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_settlement: error: %s\n", e.what());
    rc = 1;
  }
  if (scratch && o.keep)
    std::printf("kept %s\n", scratch->url().c_str());
  return rc;
}
