// bench_settlement: receipts settled per second through haca's settlement path into Postgres
// (the settlement core seals signed blocks of 256; the store writes each block, its postings,
// verdicts and SETTLED transitions in one transaction), beside a row-by-row baseline in the
// same run: the same rows written one statement per row, one transaction per block.
//
// Both run on a scratch database made for the run (migrated like the real ones, dropped at the
// end) and settle executed jobs seeded through the store's own write path, with really signed
// receipts. `haca audit` rules (db::audit) then check the chain and the ledger the run left.
//
// Targets (issue "Trust that holds against cheaters", item 8): >= 100k receipts/s and >= 50x
// the baseline.
#include <pqxx/pqxx>

#include <chrono>
#include <cstdio>
#include <cstdlib>
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
  int baseline_blocks = 10;  // settled row by row
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

// Feeds the judged jobs to a settlement core and commits every block it seals; returns seconds.
double settle_with_haca(db::store& store, core::settlement_core& core, const std::vector<core::judged_job>& jobs) {
  core::time_us now = 1'800'000'000'000'000;
  std::deque<core::effects> pending;
  const auto started = clock_type::now();
  auto run = [&](core::effects fx) {
    pending.push_back(std::move(fx));
    while (!pending.empty()) {
      auto e = std::move(pending.front());
      pending.pop_front();
      if (e.records.empty())
        continue;
      auto applied = store.apply(e.records);
      if (auto* t = std::get_if<db::transient_error>(&applied))
        throw std::runtime_error("settling: " + t->reason);
      core::committed c{std::move(e.records), std::get<std::vector<core::outcome>>(applied)};
      for (const auto& o : c.outcomes)
        if (o.what == core::outcome::kind::rejected)
          throw std::runtime_error("settling: a block was rejected: " + o.reason);
      pending.push_back(core.step(c, ++now));
    }
  };
  for (const auto& j : jobs)
    run(core.step(j, ++now));
  run(core.step(core::tick{}, now + 10'000'000)); // the last partial batch
  return seconds_since(started);
}

// The same rows, one statement per row, one transaction per block: the block row, each
// receipt's settlement, each posting and account, each job's events and row.
double settle_row_by_row(const std::string& url, core::settlement_core& core, const std::vector<core::judged_job>& jobs) {
  pqxx::connection c{url};
  core::time_us now = 1'900'000'000'000'000;
  std::vector<core::block_commit> blocks;
  // Sealing (hashing, signing) is not what is compared: blocks are sealed before the clock starts.
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
  const auto started = clock_type::now();
  for (const auto& bc : blocks) {
    pqxx::work tx{c};
    const auto& b = bc.block;
    tx.exec_params("insert into blocks (height, prev_hash, batch_root, receipts, total_amount, block_hash, signer_key, "
                   "signature, created_at) values ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                   b.height, b.prev_hash, b.batch_root, b.receipts, b.total_amount, bc.block_hash, b.signer_key,
                   b.signature, b.created_at_us);
    int index = 0;
    for (const auto& it : bc.items) {
      const char* verdict = it.verdict == core::job_state::verified ? "verified" : "unsampled";
      tx.exec_params("update receipts set block_height = $1, block_index = $2, verdict = $3 where job_id = $4 and "
                     "attempt = $5",
                     b.height, index++, verdict, it.job_id, it.attempt);
      for (const auto& p : it.postings) {
        tx.exec_params("insert into accounts (id, balance) values ($1, $2) on conflict (id) do update set balance = "
                       "accounts.balance + excluded.balance",
                       p.account, p.amount);
        tx.exec_params("insert into postings (block_height, job_id, account, amount, memo) values ($1, $2, $3, $4, $5)",
                       b.height, it.job_id, p.account, p.amount, p.memo);
      }
      if (it.verdict == core::job_state::unsampled)
        tx.exec_params("insert into job_events (job_id, seq, state, detail, attempt, at) values ($1, $2, 'UNSAMPLED', "
                       "'not drawn', $3, now())",
                       it.job_id, it.seq - 1, it.attempt);
      tx.exec_params("insert into job_events (job_id, seq, state, detail, attempt, at) values ($1, $2, 'SETTLED', "
                     "'row by row', $3, now())",
                     it.job_id, it.seq, it.attempt);
      tx.exec_params("update jobs set state = 'SETTLED', seq = $2, updated_at = now() where id = $1", it.job_id, it.seq);
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
    else if (a == "--keep") o.keep = true;
    else {
      std::fprintf(stderr,
                   "usage: bench_settlement [--db BASE_URL] [--blocks N] [--baseline-blocks N] [--keep]\n"
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
    std::printf("seeding %zu + %zu executed jobs with signed receipts through the store ...\n", n, nb);
    std::fflush(stdout);
    auto seed_started = clock_type::now();
    must_commit(store, {core::transfer{market::funding_postings("client:bench-client", 1'000'000'000, "faucet"), "faucet:bench-client", 0, 0}}, "funding the client");
    auto jobs = seed(store, 1, n, provider);
    auto baseline_jobs = seed(store, static_cast<std::int64_t>(n) + 1, nb, provider);
    std::printf("seeded in %.1f s\n", seconds_since(seed_started));

    core::settlement_core haca_core(cfg);
    const double haca_s = settle_with_haca(store, haca_core, jobs);
    core::settlement_core baseline_core(cfg, haca_core.next_height(), haca_core.prev_hash());
    const double base_s = settle_row_by_row(url, baseline_core, baseline_jobs);

    const double haca_rate = static_cast<double>(n) / haca_s;
    const double base_rate = static_cast<double>(nb) / base_s;
    std::printf("\nhaca settlement path (one transaction per block of %zu, array statements):\n", o.batch);
    std::printf("  %zu receipts in %d blocks: %.3f s, %.0f receipts/s (sealing, signing and writing)\n", n, o.blocks,
                haca_s, haca_rate);
    std::printf("baseline, row by row (one statement per row, one transaction per block):\n");
    std::printf("  %zu receipts in %d blocks: %.3f s, %.0f receipts/s (writing only)\n", nb, o.baseline_blocks, base_s,
                base_rate);
    std::printf("\nratio haca/baseline receipts/s: %.1f x (target >= 50: %s)\n", haca_rate / base_rate,
                haca_rate / base_rate >= 50 ? "met" : "not met");
    std::printf("haca receipts/s: %.0f (target >= 100000: %s)\n", haca_rate, haca_rate >= 100000 ? "met" : "not met");

    auto a = db::audit(url, db::audit_options{"", 600, cfg.key.public_key_hex});
    if (!a) throw std::runtime_error("audit: " + a.err().reason);
    std::printf("audit of what both wrote: %s (%lld blocks, %lld settled)\n",
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
