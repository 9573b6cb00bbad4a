// `haca audit` sees trouble: each test creates a fresh database (migrated like the real ones),
// writes rows directly, as a buggy or crashed coordinator might have left them, runs the real
// `haca audit` binary on it and checks the exit status and the report. A clean database passes.
#include <array>
#include <cstdio>
#include <optional>
#include <set>
#include <sys/wait.h>
#include <unistd.h>

#include <doctest/doctest.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include "db/audit.hpp"
#include "harness.hpp"
#include "market/ledger.hpp"
#include "verify/hash.hpp"
#include "verify/merkle.hpp"
#include "verify/receipt.hpp"

using namespace haca;

namespace {

// An optional number as a query parameter: "" stands for null (nullif($n, '')::bigint).
template <class T>
std::string maybe(const std::optional<T>& v) {
  return v ? std::to_string(*v) : std::string();
}

// A database of its own (test::scratch_database) that rows are written into directly.
class scratch_db : public test::scratch_database {
public:
  template <class... Args>
  void exec(const std::string& sql, Args&&... args) {
    pqxx::connection c{url()};
    pqxx::work tx{c};
    tx.exec_params(sql, std::forward<Args>(args)...);
    tx.commit();
  }
};

// A ledger as the coordinator writes it: jobs, signed receipts, signed chained blocks,
// postings and the accounts they sum to.
class ledger : public scratch_db {
public:
  verify::key_pair provider = verify::generate_key_pair();
  verify::key_pair coordinator = verify::generate_key_pair();

  std::string provider_account() const { return market::provider_account(provider.public_key_hex); }

  void post(std::optional<std::int64_t> job_id, std::optional<std::int64_t> height,
            const std::vector<market::posting>& postings) {
    for (const auto& p : postings) {
      exec("insert into accounts (id, balance) values ($1, $2) "
           "on conflict (id) do update set balance = accounts.balance + excluded.balance",
           p.account, p.amount);
      exec("insert into postings (block_height, job_id, account, amount, memo) "
           "values (nullif($1, '')::bigint, nullif($2, '')::bigint, $3, $4, $5)",
           maybe(height), maybe(job_id), p.account, p.amount, p.memo);
    }
  }
  void fund(const std::string& client, std::int64_t amount) {
    post(std::nullopt, std::nullopt, market::funding_postings(market::client_account(client), amount, "deposit"));
  }
  // A job last changed age_s seconds ago.
  void job(std::int64_t id, const std::string& client, const std::string& state, std::int64_t max_price,
           std::int64_t age_s = 0) {
    exec("insert into jobs (id, client_id, client_req_id, model_hash, input_hash, input, input_shape, tier, "
         "max_price, state, submitted_at, updated_at) values ($1, $2, $3, $4, $5, decode('00', 'hex'), '[1,1]', "
         "'sampled', $6, $7, now() - $8::bigint * interval '1 second', now() - $8::bigint * interval '1 second')",
         id, client, fmt::format("r-{}", id), verify::sha256_hex("model"), verify::sha256_hex("input"), max_price,
         state, age_s);
    // Its timeline: one event (seq 0) with its state, as the row's seq (0) says.
    exec("insert into job_events (job_id, seq, state, at) values ($1, 0, $2, now())", id, state);
  }
  // A receipt signed by the provider. With a block `height` and `index`, its job is settled
  // there with `verdict`, as the store leaves it: the row names the block, the verdict and the
  // step after the block's, and its stored events stop before the block's (its one event
  // becomes the EXECUTED before them).
  verify::receipt receipt(std::int64_t job_id, std::int64_t price, const std::string& verdict,
                          std::optional<std::int64_t> height = std::nullopt, std::optional<int> index = std::nullopt) {
    verify::receipt r;
    r.job_id = job_id;
    r.model_hash = verify::sha256_hex("model");
    r.input_hash = verify::sha256_hex("input");
    r.output_hash = verify::sha256_hex(fmt::format("output {}", job_id));
    r.trace_root = verify::sha256_hex(fmt::format("trace {}", job_id));
    r.price = price;
    r.attempt = 0;
    r.started_at_us = 1'700'000'000'000'000 + job_id;
    r.finished_at_us = r.started_at_us + 1000;
    verify::sign_receipt(r, provider);
    exec("insert into receipts (job_id, receipt_hash, model_hash, input_hash, output_hash, trace_root, provider_key, "
         "price, attempt, started_at, finished_at, signature) values "
         "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
         r.job_id, verify::receipt_hash(r), r.model_hash, r.input_hash, r.output_hash, r.trace_root, r.provider_key,
         r.price, r.attempt, r.started_at_us, r.finished_at_us, r.signature);
    if (height) {
      exec("update jobs set block_height = $2, block_index = $3, verdict = $4, seq = case when $4 = 'unsampled' then 2 "
           "else 1 end where id = $1",
           job_id, *height, index.value_or(0), verdict);
      exec("update job_events set state = 'EXECUTED' where job_id = $1 and seq = 0", job_id);
    }
    return r;
  }
  // The client pays the price to the provider (no fee).
  void charge(std::int64_t job_id, const std::string& client, std::int64_t price,
              std::optional<std::int64_t> height = std::nullopt) {
    post(job_id, height, market::settlement_postings(client, provider.public_key_hex, price, 0));
  }
  // A signed block over `receipts` in this order, linked to `prev_hash`; returns its hash.
  std::string block(std::int64_t height, const std::string& prev_hash, const std::vector<verify::receipt>& receipts,
                    std::int64_t total) {
    verify::block b;
    b.height = height;
    b.prev_hash = prev_hash;
    std::vector<std::string> leaves;
    for (const auto& r : receipts)
      leaves.push_back(verify::receipt_hash(r));
    b.batch_root = verify::merkle_root(leaves);
    b.receipts = static_cast<std::int32_t>(receipts.size());
    b.total_amount = total;
    b.created_at_us = 1'700'000'000'100'000 + height;
    verify::sign_block(b, coordinator);
    auto hash = verify::block_hash(b);
    std::string job_ids = "{";
    for (const auto& r : receipts)
      job_ids += (job_ids.size() > 1 ? "," : "") + std::to_string(r.job_id);
    exec("insert into blocks (height, prev_hash, batch_root, receipts, total_amount, block_hash, signer_key, "
         "signature, created_at, fee_bps, job_ids) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, $10::bigint[])",
         b.height, b.prev_hash, b.batch_root, b.receipts, b.total_amount, hash, b.signer_key, b.signature,
         b.created_at_us, job_ids + "}");
    return hash;
  }

  // What a healthy coordinator leaves: alice funded with 1000; job 1 settled and charged 40;
  // job 2 queued (holding 100); job 3 failed; job 4 settled after a mismatch (refunded, no
  // postings); both receipts in block 0, signed and chained.
  void clean_history() {
    fund("alice", 1000);
    job(1, "alice", "SETTLED", 100);
    auto r1 = receipt(1, 40, "verified", 0, 0);
    job(4, "alice", "SETTLED", 100);
    auto r4 = receipt(4, 40, "mismatch", 0, 1);
    block(0, std::string(64, '0'), {r1, r4}, 40);
    charge(1, "alice", 40, 0);
    job(2, "alice", "QUEUED", 100);
    job(3, "alice", "FAILED", 100);
  }
};

struct audit_run {
  int exit_code = -1;
  std::string output;
  nlohmann::json report; // the --json report
  std::set<std::string> kinds;

  const nlohmann::json* finding(const std::string& kind) const {
    for (const auto& f : report["findings"])
      if (f["kind"] == kind) return &f;
    return nullptr;
  }
};

audit_run audit_json(const scratch_db& db, const std::string& extra = {}) {
  auto r = test::run_command(fmt::format("{} audit --db '{}' --json {} 2>/dev/null", HACA_BINARY, db.url(), extra));
  audit_run out{r.exit_code, r.output, {}, {}};
  INFO("haca audit --json printed:\n", r.output);
  REQUIRE_NOTHROW(out.report = nlohmann::json::parse(r.output));
  REQUIRE(out.report["findings"].is_array());
  for (const auto& f : out.report["findings"])
    out.kinds.insert(f["kind"].get<std::string>());
  return out;
}

// The audit found exactly `kind` (count, and an example containing `example`) and exited 1.
void expect_only(const audit_run& a, const std::string& kind, std::int64_t count, const std::string& example) {
  INFO("report:\n", a.report.dump(1));
  CHECK(a.exit_code == 1);
  CHECK(a.report["ok"] == false);
  CHECK(a.kinds == std::set<std::string>{kind});
  const auto* f = a.finding(kind);
  REQUIRE(f != nullptr);
  CHECK((*f)["count"] == count);
  CHECK_MESSAGE((*f)["example"].get<std::string>().find(example) != std::string::npos, "example: ",
                (*f)["example"].get<std::string>(), ", expected to contain: ", example);
}

} // namespace

TEST_SUITE("audit") {

TEST_CASE("haca audit passes a fresh database and a clean history with exit status 0") {
  ledger db;
  auto empty = audit_json(db);
  CHECK(empty.exit_code == 0);
  CHECK(empty.report["ok"] == true);
  CHECK(empty.kinds.empty());

  db.clean_history();
  auto a = audit_json(db);
  INFO(a.report.dump(1));
  CHECK(a.exit_code == 0);
  CHECK(a.report["ok"] == true);
  CHECK(a.kinds.empty());
  CHECK(a.report["jobs"] == 4);
  CHECK(a.report["settled"] == 2);
  CHECK(a.report["open"] == 1);
  CHECK(a.report["blocks"] == 1);
  CHECK(a.report["receipts_checked"] == 2);

  auto text = test::run_command(fmt::format("{} audit --db '{}' 2>&1", HACA_BINARY, db.url()));
  INFO(text.output);
  CHECK(text.exit_code == 0);
  CHECK(text.output.find("result: ok, no trouble found") != std::string::npos);
  CHECK(text.output.find("FAIL") == std::string::npos);
}

TEST_CASE("haca audit reports jobs stuck in a non-final state past --stuck-after-s, naming the oldest") {
  ledger db;
  db.clean_history();
  db.job(10, "alice", "ASSIGNED", 1, 3600);
  db.job(11, "alice", "QUEUED", 1, 700);
  db.job(12, "alice", "EXECUTED", 1, 900);
  db.receipt(12, 1, "unsampled");
  db.job(13, "alice", "ASSIGNED", 1, 10);     // recent: not stuck
  db.job(14, "alice", "FAILED", 1, 100'000);  // final: never stuck
  db.job(15, "alice", "CANCELLED", 1, 100'000);
  db.job(16, "alice", "EXPIRED", 1, 100'000);

  auto a = audit_json(db);
  expect_only(a, "stuck_jobs", 3, "job 10 has been ASSIGNED for 36");
  CHECK(a.report["stuck_after_s"] == 600);

  expect_only(audit_json(db, "--stuck-after-s 800"), "stuck_jobs", 2, "job 10 has been ASSIGNED");
  auto lenient = audit_json(db, "--stuck-after-s 4000");
  CHECK(lenient.exit_code == 0);
  CHECK(lenient.kinds.empty());

  auto text = test::run_command(fmt::format("{} audit --db '{}' 2>&1", HACA_BINARY, db.url()));
  INFO(text.output);
  CHECK(text.exit_code == 1);
  CHECK(text.output.find("FAIL  stuck_jobs") != std::string::npos);
  CHECK(text.output.find("result: TROUBLE") != std::string::npos);
}

TEST_CASE("haca audit reports executed jobs without a receipt") {
  ledger db;
  db.clean_history();
  db.job(20, "alice", "EXECUTED", 1);
  db.job(21, "alice", "VERIFIED", 1);
  db.job(22, "alice", "DISPUTED", 1);
  db.job(23, "alice", "UNSAMPLED", 1);
  db.job(24, "alice", "SETTLED", 1);
  db.job(25, "alice", "ASSIGNED", 1); // not executed yet: no receipt expected
  expect_only(audit_json(db), "executed_without_receipt", 5, "job 20 is EXECUTED but has no receipt");
}

TEST_CASE("haca audit reports accounts below zero but not the mint") {
  ledger db;
  db.clean_history();
  // Balanced postings (so the ledger itself sums up) that leave bob and the fee account short.
  db.post(std::nullopt, std::nullopt,
          {{"client:bob", -5, "overdraft"}, {"protocol:fees", -1, "overdraft"}, {"client:carol", 6, "overdraft"}});
  auto a = audit_json(db);
  expect_only(a, "negative_accounts", 2, "account 'client:bob' has balance -5");
  CHECK(a.finding("negative_accounts")->at("example").get<std::string>().find("mint") == std::string::npos);
}

TEST_CASE("haca audit reports clients whose open jobs hold more than their balance") {
  ledger db;
  db.clean_history();
  db.fund("dave", 50);
  db.job(30, "dave", "QUEUED", 40);
  db.job(31, "dave", "ASSIGNED", 40);
  db.job(32, "dave", "FAILED", 1000); // final: holds nothing
  db.job(33, "erin", "SUBMITTED", 10); // no account at all: a balance of 0
  db.job(34, "alice", "QUEUED", 900);  // alice holds 100 + 900 = 1000 > 960
  auto a = audit_json(db);
  expect_only(a, "holds_exceed_balance", 3, "client 'alice' holds 1000 for 2 open jobs but its balance is 960");
}

TEST_CASE("haca audit reports settled jobs outside their block and postings of jobs that are not settled") {
  SUBCASE("settled in no block") {
    ledger db;
    db.clean_history();
    db.job(40, "alice", "SETTLED", 10);
    db.receipt(40, 10, "verified");
    db.job(41, "alice", "SETTLED", 10);
    db.receipt(41, 10, "unsampled");
    db.job(42, "alice", "SETTLED", 10); // refunded after a mismatch: still settled in a block
    db.receipt(42, 10, "mismatch");
    expect_only(audit_json(db), "settled_outside_blocks", 3, "job 40 is SETTLED but names no block");
  }
  SUBCASE("a block that no longer lists a job settled in it") {
    ledger db;
    db.clean_history();
    db.exec("update blocks set job_ids = array[1] where height = 0"); // job 4, refunded, left out
    auto a = audit_json(db);
    INFO(a.report.dump(1));
    CHECK(a.kinds.count("settled_outside_blocks") == 1);
    CHECK((*a.finding("settled_outside_blocks"))["example"] ==
          "job 4 is SETTLED in block 0 at place 1, but that block does not list it there");
    CHECK(a.kinds.count("broken_chain") == 1);  // its batch root no longer matches
    CHECK(a.kinds.count("block_totals") == 1);  // it says 2 receipts
  }
  SUBCASE("charged before it settled") {
    ledger db;
    db.clean_history();
    db.job(50, "alice", "EXECUTED", 10);
    db.receipt(50, 10, "unsampled");
    db.charge(50, "alice", 10);
    db.job(51, "alice", "FAILED", 10);
    db.charge(51, "alice", 5);
    expect_only(audit_json(db), "postings_on_unsettled_job", 2, "job 50 has postings but is EXECUTED");
  }
}

TEST_CASE("haca audit reports jobs whose events have a gap or do not end in the row's state") {
  ledger db;
  db.clean_history();
  db.job(60, "alice", "FAILED", 1); // events 0 and 2, the row at seq 2: event 1 is lost
  db.exec("insert into job_events (job_id, seq, state, at) values (60, 2, 'FAILED', now())");
  db.exec("update jobs set seq = 2 where id = 60");
  db.job(61, "alice", "FAILED", 1); // its only event says QUEUED
  db.exec("update job_events set state = 'QUEUED' where job_id = 61");
  expect_only(audit_json(db), "broken_timelines", 2, "job 60 is FAILED at seq 2 but has 2 events");
}

TEST_CASE("haca audit still reports forged receipts, a broken chain, unbalanced postings and balance drift") {
  SUBCASE("a receipt whose signed price was changed") {
    ledger db;
    db.clean_history();
    db.exec("update receipts set price = price + 1 where job_id = 1");
    auto a = audit_json(db);
    INFO(a.report.dump(1));
    CHECK(a.exit_code == 1);
    CHECK(a.kinds.count("invalid_receipts") == 1);
    CHECK((*a.finding("invalid_receipts"))["example"] == "the receipt of job 1 (attempt 0) does not verify");
    CHECK(a.kinds.count("broken_chain") == 1); // its hash is a leaf of block 0's batch root
    CHECK(a.report["receipts_valid"] == false);
  }
  SUBCASE("a block whose batch root was replaced") {
    ledger db;
    db.clean_history();
    db.exec("update blocks set batch_root = $1 where height = 0", verify::sha256_hex("other"));
    expect_only(audit_json(db), "broken_chain", 1, "block 0's stored hash differs from its contents");
  }
  SUBCASE("a posting without its counterpart") {
    ledger db;
    db.clean_history();
    db.post(1, 0, {{db.provider_account(), 7, "stray"}});
    expect_only(audit_json(db), "unbalanced_postings", 1, "the postings of block 0 sum to 7, not zero");
  }
  SUBCASE("a balance changed without a posting") {
    ledger db;
    db.clean_history();
    db.exec("update accounts set balance = balance + 3 where id = 'client:alice'");
    expect_only(audit_json(db), "account_drift", 1, "account 'client:alice' has balance 963 but its postings sum to 960");
  }
}

TEST_CASE("haca audit checks each block's totals against the receipts it settled and the postings it made") {
  SUBCASE("a block signed with a total its receipts do not charge") {
    ledger db;
    db.fund("alice", 1000);
    db.job(1, "alice", "SETTLED", 100);
    auto r1 = db.receipt(1, 40, "verified", 0, 0);
    db.block(0, std::string(64, '0'), {r1}, 50); // a consistent, signed block that overstates
    db.charge(1, "alice", 40, 0);
    expect_only(audit_json(db), "block_totals", 1,
                "block 0 says 1 receipts and total_amount 50; it settled 1 receipts charging 40, and its client "
                "postings paid 40");
  }
  SUBCASE("a client posting of a block edited by hand, with its counterpart") {
    ledger db;
    db.clean_history();
    db.exec("update postings set amount = amount + 5 where account = 'client:alice' and block_height = 0");
    db.exec("update postings set amount = amount - 5 where account = $1 and block_height = 0", db.provider_account());
    db.exec("update accounts set balance = balance + 5 where id = 'client:alice'");
    db.exec("update accounts set balance = balance - 5 where id = $1", db.provider_account());
    expect_only(audit_json(db), "block_totals", 1,
                "block 0 says 2 receipts and total_amount 40; it settled 2 receipts charging 40, and its client "
                "postings paid 35");
  }
}

TEST_CASE("haca audit --coordinator-key pins the key every block must be signed by") {
  ledger db;
  const auto real = db.coordinator;                 // the key the operators know and pin
  db.coordinator = verify::generate_key_pair();     // but the blocks are signed by another
  db.clean_history();
  auto unpinned = audit_json(db);
  CHECK(unpinned.exit_code == 0); // without a pin, each block's own signer_key is trusted
  auto a = audit_json(db, "--coordinator-key " + real.public_key_hex);
  expect_only(a, "broken_chain", 1,
              "block 0 is signed by " + db.coordinator.public_key_hex.substr(0, 16) +
                  "..., not by the pinned coordinator key " + real.public_key_hex.substr(0, 16));
  CHECK(audit_json(db, "--coordinator-key " + db.coordinator.public_key_hex).exit_code == 0);
  auto garbage = test::run_command(fmt::format("{} audit --db '{}' --coordinator-key nothex 2>&1", HACA_BINARY, db.url()));
  CHECK(garbage.exit_code != 0);
  CHECK(garbage.output.find("must be 64 lowercase hex characters") != std::string::npos);
}

TEST_CASE("haca audit reports every kind of trouble at once, each with its count and first example") {
  ledger db;
  db.clean_history();
  db.exec("update receipts set signature = $1 where job_id = 4", std::string(128, 'a'));  // invalid receipt
  db.job(10, "alice", "ASSIGNED", 1, 3600);                                                // stuck
  db.job(20, "alice", "VERIFIED", 1);                                                      // no receipt
  db.post(std::nullopt, std::nullopt, {{"client:bob", -5, "x"}, {"client:carol", 5, "x"}}); // negative
  db.job(33, "erin", "QUEUED", 10);                                                        // holds > balance
  db.job(40, "alice", "SETTLED", 10);                                                      // in no block
  db.receipt(40, 10, "verified");
  db.job(50, "alice", "EXECUTED", 10);                                                     // charged early
  db.receipt(50, 10, "unsampled");
  db.charge(50, "alice", 10);
  db.block(2, std::string(64, 'f'), {}, 0);                                                // heights jump
  db.post(1, 0, {{"client:alice", 7, "stray"}});                                           // unbalanced
  db.exec("update accounts set balance = balance + 1 where id = 'client:carol'");          // drift
  db.job(60, "alice", "FAILED", 1);                                                        // its event lost
  db.exec("delete from job_events where job_id = 60");

  auto a = audit_json(db);
  INFO(a.report.dump(1));
  CHECK(a.exit_code == 1);
  std::set<std::string> all;
  for (const auto& c : db::audit_checks())
    all.insert(std::string(c.kind));
  CHECK(a.kinds == all);
  for (const auto& f : a.report["findings"]) {
    CHECK(f["count"].get<std::int64_t>() >= 1);
    CHECK(!f["example"].get<std::string>().empty());
  }
  CHECK((*a.finding("broken_chain"))["example"] == "block heights jump from 0 to 2");
  CHECK((*a.finding("stuck_jobs"))["count"] == 1);
  CHECK((*a.finding("holds_exceed_balance"))["example"].get<std::string>().find("'erin'") != std::string::npos);

  // The library call gives the same findings, in the order of audit_checks().
  auto r = db::audit(db.url(), db::audit_options{"alice", 600, ""});
  REQUIRE(r.ok());
  REQUIRE(r->findings.size() == db::audit_checks().size());
  for (std::size_t i = 0; i < r->findings.size(); ++i)
    CHECK(r->findings[i].kind == db::audit_checks()[i].kind);
  CHECK(r->problem == r->findings.front().example);
  CHECK_FALSE(r->receipts_valid);
  CHECK_FALSE(r->chain_valid);
  CHECK_FALSE(r->postings_balanced);
}

TEST_CASE("haca audit exits 2 when it cannot read the database") {
  auto r = test::run_command(fmt::format("{} audit --db 'postgresql:///haca_no_such_database_{}' 2>&1", HACA_BINARY, ::getpid()));
  CHECK(r.exit_code == 2);
  CHECK(r.output.find("error:") != std::string::npos);
}

} // TEST_SUITE
