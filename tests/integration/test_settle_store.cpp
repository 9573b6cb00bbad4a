// The settlement write path against a real Postgres, tried as a crash, a bug or a race would
// try it: db::store applies blocks sealed by a real settlement core (haca_settle_block). A block
// written twice is written once; another block at a stored height, a block that does not link
// to the stored chain and a block with a job that cannot settle write nothing; the ledger, the
// jobs' rows and their timelines say exactly what the committed blocks say, and `haca audit`
// agrees.
#include <doctest/doctest.h>
#include <fmt/format.h>
#include <pqxx/pqxx>

#include "core/settlement.hpp"
#include "db/audit.hpp"
#include "db/store.hpp"
#include "harness.hpp"
#include "market/ledger.hpp"
#include "verify/hash.hpp"

using namespace haca;

namespace {

constexpr core::time_us t0 = 1'700'000'000'000'000;

struct settle_fixture {
  test::scratch_database db;
  db::store store{db.url()};
  verify::key_pair provider = verify::generate_key_pair();
  core::settlement_config cfg;

  settle_fixture() {
    cfg.batch_size = 3;
    cfg.batch_ms = 1'000'000;
    cfg.fee_bps = 500;
    cfg.key = verify::generate_key_pair();
    apply_ok({core::transfer{market::funding_postings("client:c", 1'000'000, "deposit"), "deposit:c", 0, 0}});
  }

  std::vector<core::outcome> apply(const std::vector<core::record>& records) {
    auto r = store.apply(records);
    REQUIRE(std::holds_alternative<std::vector<core::outcome>>(r));
    return std::get<std::vector<core::outcome>>(r);
  }
  void apply_ok(const std::vector<core::record>& records) {
    for (const auto& o : apply(records))
      REQUIRE_MESSAGE(o.what != core::outcome::kind::rejected, o.reason);
  }

  // Job `id`, stored EXECUTED with a signed receipt as the execution core leaves it; judged.
  core::judged_job executed(std::int64_t id, core::job_state verdict = core::job_state::unsampled) {
    core::job_spec s;
    s.id = id;
    s.client_id = "c";
    s.request_id = fmt::format("r{}", id);
    s.model = verify::sha256_hex("model");
    s.tier = "sampled";
    s.max_price = 100;
    s.input.type = kernels::dtype::i8;
    s.input.shape = {1, 4};
    s.input.data.assign(4, static_cast<char>(id));
    s.input_hash = verify::sha256_hex(s.input.data);
    s.submitted_us = t0 + id;
    core::execution_result res;
    res.output.type = kernels::dtype::i8;
    res.output.shape = {1, 10};
    res.output.data.assign(10, static_cast<char>(id));
    res.classes = {0};
    auto& r = res.receipt;
    r.job_id = id;
    r.model_hash = s.model;
    r.input_hash = s.input_hash;
    r.output_hash = verify::sha256_hex(res.output.data);
    r.trace_root = verify::sha256_hex(fmt::format("trace {}", id));
    r.price = 10 + id;
    r.started_at_us = t0 + id;
    r.finished_at_us = t0 + id + 1;
    verify::sign_receipt(r, provider);
    core::judged_job j{id, 0, 4, "c", r, verdict, {}};
    std::vector<core::record> recs{core::job_insert{std::move(s)},
                                   core::job_transition{id, 2, core::job_state::queued, core::job_state::assigned, 0,
                                                        provider.public_key_hex, r.price, "test", t0 + id, std::nullopt},
                                   core::job_transition{id, 3, core::job_state::assigned, core::job_state::executed, 0,
                                                        "", 0, "", t0 + id + 1, std::move(res)}};
    if (verdict != core::job_state::unsampled)
      recs.push_back(core::job_transition{id, 4, core::job_state::executed, verdict, 0, "", 0, "judged", t0 + id + 2,
                                          std::nullopt});
    apply_ok(recs);
    return j;
  }

  // The block a core seals for these jobs (a full batch, or a partial one when its time is up).
  static core::block_commit seal(core::settlement_core& core, const std::vector<core::judged_job>& jobs) {
    core::effects fx;
    for (const auto& j : jobs)
      fx = core.step(j, t0 + 1'000'000);
    if (fx.records.empty())
      fx = core.step(core::tick{}, t0 + 10'000'000'000);
    REQUIRE(fx.records.size() == 1);
    return std::get<core::block_commit>(fx.records.front());
  }

  std::string q(const std::string& sql) const {
    pqxx::connection c{db.url()};
    pqxx::read_transaction tx{c};
    auto r = tx.exec1(sql);
    return r[0].is_null() ? "" : r[0].c_str();
  }
  std::string ledger() const {
    return q("select string_agg(id || ' ' || balance, ', ' order by id) from accounts") + " | " +
           q("select count(*) from postings") + " postings | " + q("select count(*) from blocks") + " blocks";
  }
};

} // namespace

TEST_SUITE("settle_store") {

TEST_CASE("a block is written once, in a constant number of rows, and its jobs' rows and timelines say so") {
  settle_fixture f;
  core::settlement_core core(f.cfg);
  const auto block = f.seal(core, {f.executed(1), f.executed(2, core::job_state::verified), f.executed(3)});
  const auto first = f.apply({block});
  REQUIRE(first.size() == 1);
  CHECK(first[0].what == core::outcome::kind::ok);
  const auto after = f.ledger();
  // A retry after a lost confirmation finds its own commit: ok, nothing written again.
  const auto again = f.apply({block});
  CHECK(again[0].what != core::outcome::kind::rejected);
  CHECK(f.ledger() == after);
  // One posting per account: the client's payments, the provider's earnings, the fees.
  const auto pk = f.provider.public_key_hex;
  CHECK(f.q("select string_agg(account || ' ' || amount, ', ' order by account) from postings where block_height = 0") ==
        fmt::format("client:c -36, protocol:fees 3, provider:{} 33", pk));
  CHECK(f.q("select job_ids::text || ' ' || fee_bps from blocks where height = 0") == "{1,2,3} 500");
  CHECK(f.q("select string_agg(id || ':' || state || ':' || block_height || ':' || block_index || ':' || verdict, ' "
            "' order by id) from jobs") ==
        "1:SETTLED:0:0:unsampled 2:SETTLED:0:1:verified 3:SETTLED:0:2:unsampled");
  CHECK(f.q("select string_agg(state, ',' order by seq) from job_timeline where job_id = 1") ==
        "SUBMITTED,QUEUED,ASSIGNED,EXECUTED,UNSAMPLED,SETTLED");
  CHECK(f.q("select string_agg(state, ',' order by seq) from job_timeline where job_id = 2") ==
        "SUBMITTED,QUEUED,ASSIGNED,EXECUTED,VERIFIED,SETTLED");
  auto a = db::audit(f.db.url(), db::audit_options{"", 600, f.cfg.key.public_key_hex});
  REQUIRE(a);
  INFO(a->problem);
  CHECK(a->ok());
  CHECK(a->settled == 3);
}

TEST_CASE("a block that cannot be written writes nothing: a fork, a broken link, a job that cannot settle") {
  settle_fixture f;
  core::settlement_core core(f.cfg);
  const auto j1 = f.executed(1), j2 = f.executed(2), j3 = f.executed(3), j4 = f.executed(4);
  const auto block0 = f.seal(core, {j1, j2, j3});
  REQUIRE(f.apply({block0})[0].what == core::outcome::kind::ok);
  core.step(core::committed{{block0}, {core::outcome{}}}, t0 + 2'000'000);
  const auto before = f.ledger();
  const auto nothing_written = [&] {
    CHECK(f.ledger() == before);
    CHECK(f.q("select state from jobs where id = 4") == "EXECUTED");
    CHECK(f.q("select count(*) from jobs where block_height = 1") == "0");
  };
  // Job 4 sealed by `chain`: refused as a whole (no job to blame), for `why`, and nothing written.
  const auto refused_whole = [&](core::settlement_core& chain, const std::string& why) {
    const auto o = f.apply({f.seal(chain, {j4})});
    CHECK(o[0].what == core::outcome::kind::rejected);
    CHECK(o[0].bad_jobs.empty());
    CHECK_MESSAGE(o[0].reason.find(why) != std::string::npos, o[0].reason);
    nothing_written();
  };

  SUBCASE("another block at a stored height: a fork") {
    core::settlement_core other(f.cfg); // a second chain from height 0
    refused_whole(other, "fork");
  }
  SUBCASE("a block that does not link to the stored chain") {
    core::settlement_core stray(f.cfg, 1, std::string(64, 'a')); // height 1 after a block 0 it never saw
    refused_whole(stray, "does not link");
  }
  SUBCASE("a block with a job settled already, or never executed: those are named, the rest settle after") {
    auto j5 = j4;
    j5.job_id = 5; // no such job
    j5.receipt.job_id = 5;
    core::settlement_core next(f.cfg, 1, block0.block_hash);
    auto bad = f.seal(next, {j4, j1, j5});
    const auto o = f.apply({bad});
    CHECK(o[0].what == core::outcome::kind::rejected);
    CHECK(o[0].bad_jobs == std::vector<std::int64_t>{1, 5});
    nothing_written();
    // The core sets them aside and seals the rest again at the same height.
    auto fx = next.step(core::committed{{bad}, o}, t0 + 3'000'000);
    CHECK(next.set_aside() == 2);
    fx = next.step(core::tick{}, t0 + 10'000'000'000);
    REQUIRE(fx.records.size() == 1);
    const auto retry = std::get<core::block_commit>(fx.records.front());
    CHECK(retry.block.height == 1);
    CHECK(f.apply({retry})[0].what == core::outcome::kind::ok);
    CHECK(f.q("select job_ids::text from blocks where height = 1") == "{4}");
    auto a = db::audit(f.db.url(), db::audit_options{"", 600, f.cfg.key.public_key_hex});
    REQUIRE(a);
    INFO(a->problem);
    CHECK(a->ok());
  }
}

} // TEST_SUITE
