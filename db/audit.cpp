#include "db/audit.hpp"

#include <algorithm>
#include <map>
#include <pqxx/pqxx>

#include <fmt/format.h>

#include "verify/merkle.hpp"
#include "verify/receipt.hpp"

namespace haca::db {
namespace {

// The states a job ends in; every other state holds the client's escrow.
constexpr const char* final_states = "('SETTLED', 'FAILED', 'EXPIRED', 'CANCELLED')";
// The states after a provider's result was accepted: each has a receipt.
constexpr const char* executed_states = "('EXECUTED', 'VERIFIED', 'UNSAMPLED', 'DISPUTED', 'SETTLED')";

verify::receipt receipt_from_row(const pqxx::row& row) {
  verify::receipt r;
  r.job_id = row["job_id"].as<std::int64_t>();
  r.model_hash = row["model_hash"].c_str();
  r.input_hash = row["input_hash"].c_str();
  r.output_hash = row["output_hash"].c_str();
  r.trace_root = row["trace_root"].c_str();
  r.provider_key = row["provider_key"].c_str();
  r.price = row["price"].as<std::int64_t>();
  r.attempt = row["attempt"].as<std::int32_t>();
  r.started_at_us = row["started_at"].as<std::int64_t>();
  r.finished_at_us = row["finished_at"].as<std::int64_t>();
  r.signature = row["signature"].c_str();
  return r;
}

// Collects findings; a kind reported twice adds up, keeping the first example.
struct collector {
  audit_report& a;
  void add(std::string_view kind, std::int64_t count, std::string example) {
    if (count <= 0) return;
    for (auto& f : a.findings)
      if (f.kind == kind) {
        f.count += count;
        return;
      }
    a.findings.push_back({std::string(kind), count, std::move(example)});
  }
};

std::size_t order_of(std::string_view kind) {
  const auto& checks = audit_checks();
  for (std::size_t i = 0; i < checks.size(); ++i)
    if (checks[i].kind == kind) return i;
  return checks.size();
}

} // namespace

const std::vector<audit_check>& audit_checks() {
  static const std::vector<audit_check> checks = {
      {"invalid_receipts", "receipts whose Ed25519 signature does not verify"},
      {"broken_chain", "blocks whose height, link, hash, signer (with a pinned key), signature or batch root does not "
                       "check"},
      {"block_totals", "blocks whose receipt count or total_amount differs from the jobs they list (settled in them) "
                       "and the client postings they made"},
      {"unbalanced_postings", "postings that do not sum to zero, in all, for one block or for one job"},
      {"account_drift", "accounts whose balance differs from the sum of their postings"},
      {"stuck_jobs", "jobs not in a final state whose last change is older than the threshold"},
      {"executed_without_receipt", "jobs in EXECUTED, VERIFIED, UNSAMPLED, DISPUTED or SETTLED without a receipt"},
      {"negative_accounts", "accounts below zero (other than 'mint', which funds the faucet)"},
      {"holds_exceed_balance", "clients whose open jobs' max_price (their escrow holds) exceed their balance"},
      {"settled_outside_blocks", "SETTLED jobs that their block does not list at their place"},
      {"postings_on_unsettled_job", "jobs with postings that are not SETTLED"},
      {"broken_timelines", "jobs whose events are not numbered 0 to the row's seq, or whose last event is not the "
                           "row's state"},
  };
  return checks;
}

const audit_finding* audit_report::find(std::string_view kind) const {
  for (const auto& f : findings)
    if (f.kind == kind) return &f;
  return nullptr;
}

result<audit_report> audit(const std::string& url, const audit_options& o) {
  try {
    pqxx::connection conn{url};
    pqxx::read_transaction tx{conn};
    // The checks read whole tables. Right after a burst of writes the statistics are stale, and
    // a nested loop chosen on them turned one anti-join quadratic (5 s over 8k jobs); hash and
    // merge joins stay linear whatever the estimates.
    tx.exec("set local enable_nestloop = off");
    audit_report a;
    collector c{a};
    // Only ever a parameter ($1), never spliced into the SQL text.
    const std::string& client = o.client_id;

    auto counts = tx.exec_params1("select count(*), count(*) filter (where state = 'SETTLED'), "
                                  "count(*) filter (where state in ('FAILED', 'EXPIRED')) "
                                  "from jobs where $1 = '' or client_id = $1",
                                  client);
    a.jobs = counts[0].as<std::int64_t>();
    a.settled = counts[1].as<std::int64_t>();
    a.failed = counts[2].as<std::int64_t>();
    auto verdicts = tx.exec_params1("select count(*) filter (where verdict = 'verified'), "
                                    "count(*) filter (where verdict = 'unsampled'), "
                                    "count(*) filter (where verdict = 'mismatch') "
                                    "from jobs where $1 = '' or client_id = $1",
                                    client);
    a.verified = verdicts[0].as<std::int64_t>();
    a.unsampled = verdicts[1].as<std::int64_t>();
    a.disputed = verdicts[2].as<std::int64_t>();
    a.open = tx.exec1(fmt::format("select count(*) from jobs where state not in {}", final_states))[0]
                 .as<std::int64_t>();

    // Receipt signatures.
    std::int64_t invalid = 0;
    std::string first_invalid;
    for (const auto& row : tx.exec_params("select r.* from receipts r join jobs j on j.id = r.job_id "
                                          "where $1 = '' or j.client_id = $1 order by r.job_id, r.attempt",
                                          client)) {
      ++a.receipts_checked;
      if (!verify::verify_receipt(receipt_from_row(row))) {
        if (invalid++ == 0)
          first_invalid = fmt::format("the receipt of job {} (attempt {}) does not verify", row["job_id"].c_str(),
                                      row["attempt"].c_str());
      }
    }
    a.receipts_valid = invalid == 0;
    c.add("invalid_receipts", invalid, first_invalid);

    // The chain: heights from 0, each prev_hash the block before's hash, hashes and signatures
    // recomputed, each batch root rebuilt from the receipts of the jobs it lists, in its order
    // (a job's receipt is the one of the attempt its row settled).
    std::map<std::int64_t, std::vector<std::string>> leaves;
    for (const auto& row : tx.exec("select b.height, r.* from blocks b cross join unnest(b.job_ids) with ordinality "
                                   "as v (job_id, idx) join jobs j on j.id = v.job_id join receipts r on r.job_id = "
                                   "j.id and r.attempt = j.attempt order by b.height, v.idx"))
      leaves[row["height"].as<std::int64_t>()].push_back(verify::receipt_hash(receipt_from_row(row)));
    std::string prev(64, '0');
    std::int64_t broken_blocks = 0;
    std::string first_broken;
    for (const auto& row : tx.exec("select * from blocks order by height")) {
      verify::block b;
      b.height = row["height"].as<std::int64_t>();
      b.prev_hash = row["prev_hash"].c_str();
      b.batch_root = row["batch_root"].c_str();
      b.receipts = row["receipts"].as<std::int32_t>();
      b.total_amount = row["total_amount"].as<std::int64_t>();
      b.created_at_us = row["created_at"].as<std::int64_t>();
      b.signer_key = row["signer_key"].c_str();
      b.signature = row["signature"].c_str();
      std::string problem;
      if (b.height != a.blocks)
        problem = fmt::format("block heights jump from {} to {}", a.blocks - 1, b.height);
      else if (b.prev_hash != prev)
        problem = fmt::format("block {} does not link to the block before it", b.height);
      else if (verify::block_hash(b) != row["block_hash"].c_str())
        problem = fmt::format("block {}'s stored hash differs from its contents", b.height);
      else if (!o.coordinator_key.empty() && b.signer_key != o.coordinator_key)
        problem = fmt::format("block {} is signed by {}..., not by the pinned coordinator key {}...", b.height,
                              b.signer_key.substr(0, 16), o.coordinator_key.substr(0, 16));
      else if (!verify::verify_block(b))
        problem = fmt::format("block {}'s signature does not verify", b.height);
      else if (verify::merkle_root(leaves[b.height]) != b.batch_root)
        problem = fmt::format("block {}'s batch root does not match its receipts", b.height);
      if (!problem.empty() && broken_blocks++ == 0)
        first_broken = std::move(problem);
      prev = row["block_hash"].c_str();
      ++a.blocks;
    }
    a.chain_valid = broken_blocks == 0;
    c.add("broken_chain", broken_blocks, first_broken);

    // Each block's totals against what it settled: its receipt count, the prices it charged
    // (nothing for a mismatch) and what its client postings paid must all say the same. A job
    // it lists counts only when the job's row says it settled in this block.
    auto totals = tx.exec(
        "with r as (select b.height h, count(*) n, coalesce(sum(r.price) filter (where j.verdict <> 'mismatch'), 0) "
        "charged from blocks b cross join unnest(b.job_ids) as v (job_id) join jobs j on j.id = v.job_id and "
        "j.block_height = b.height join receipts r on r.job_id = j.id and r.attempt = j.attempt group by b.height), "
        "p as (select block_height h, -coalesce(sum(amount), 0) paid from postings where block_height is not null "
        "and account like 'client:%' group by block_height) "
        "select count(*) over (), b.height, b.receipts, b.total_amount, coalesce(r.n, 0), coalesce(r.charged, 0), "
        "coalesce(p.paid, 0) from blocks b left join r on r.h = b.height left join p on p.h = b.height "
        "where b.receipts <> coalesce(r.n, 0) or b.total_amount <> coalesce(r.charged, 0) "
        "or b.total_amount <> coalesce(p.paid, 0) order by b.height limit 1");
    if (!totals.empty()) {
      const auto& t = totals[0];
      c.add("block_totals", t[0].as<std::int64_t>(),
            fmt::format("block {} says {} receipts and total_amount {}; it settled {} receipts charging {}, and its "
                        "client postings paid {}",
                        t[1].c_str(), t[2].c_str(), t[3].c_str(), t[4].c_str(), t[5].c_str(), t[6].c_str()));
    }

    // The ledger: all postings, each block's and each job's, sum to zero; balances are their
    // postings' sums. Grouped by block, else by job (slashes); the postings of neither (faucet
    // grants, deposits, stakes) form one more group. Every group balanced means all postings are.
    auto unbalanced = tx.exec("select count(*) over (), block_height, case when block_height is null then job_id end "
                              "j, sum(amount) from postings group by 2, 3 having sum(amount) <> 0 "
                              "order by 2 nulls last, 3 nulls last limit 1");
    if (!unbalanced.empty()) {
      const auto& u = unbalanced[0];
      c.add("unbalanced_postings", u[0].as<std::int64_t>(),
            !u[1].is_null() ? fmt::format("the postings of block {} sum to {}, not zero", u[1].c_str(), u[3].c_str())
            : !u[2].is_null()
                ? fmt::format("the postings of job {} sum to {}, not zero", u[2].c_str(), u[3].c_str())
                : fmt::format("the postings of no block or job (grants, deposits, stakes) sum to {}, not zero",
                              u[3].c_str()));
    }
    auto drift = tx.exec("select count(*) over (), a.id, a.balance, coalesce(p.s, 0) from accounts a "
                         "left join (select account, sum(amount) s from postings group by account) p "
                         "on p.account = a.id where a.balance <> coalesce(p.s, 0) order by a.id limit 1");
    if (!drift.empty())
      c.add("account_drift", drift[0][0].as<std::int64_t>(),
            fmt::format("account '{}' has balance {} but its postings sum to {}", drift[0][1].c_str(),
                        drift[0][2].c_str(), drift[0][3].c_str()));
    a.postings_balanced = !a.find("unbalanced_postings") && !a.find("account_drift");

    // a. Jobs that stopped moving: not final, unchanged for longer than the threshold.
    auto stuck = tx.exec_params(fmt::format("select count(*) over (), id, state, "
                                            "floor(extract(epoch from now() - updated_at))::bigint from jobs "
                                            "where state not in {} and updated_at < now() - $1::bigint * interval "
                                            "'1 second' order by updated_at, id limit 1",
                                            final_states),
                                o.stuck_after_s);
    if (!stuck.empty())
      c.add("stuck_jobs", stuck[0][0].as<std::int64_t>(),
            fmt::format("job {} has been {} for {} s, the longest of those unchanged for over {} s",
                        stuck[0][1].c_str(), stuck[0][2].c_str(), stuck[0][3].c_str(), o.stuck_after_s));

    // b. Executed jobs must have a receipt.
    auto no_receipt = tx.exec(fmt::format("select count(*) over (), j.id, j.state from jobs j where j.state in {} "
                                          "and not exists (select 1 from receipts r where r.job_id = j.id) "
                                          "order by j.id limit 1",
                                          executed_states));
    if (!no_receipt.empty())
      c.add("executed_without_receipt", no_receipt[0][0].as<std::int64_t>(),
            fmt::format("job {} is {} but has no receipt", no_receipt[0][1].c_str(), no_receipt[0][2].c_str()));

    // c. No account below zero but the mint, which funds the faucet.
    auto negative = tx.exec("select count(*) over (), id, balance from accounts where balance < 0 and id <> 'mint' "
                            "order by balance, id limit 1");
    if (!negative.empty())
      c.add("negative_accounts", negative[0][0].as<std::int64_t>(),
            fmt::format("account '{}' has balance {}", negative[0][1].c_str(), negative[0][2].c_str()));

    // d. A client's escrow holds are the max_price of its open jobs: its balance must cover them.
    auto holds = tx.exec(fmt::format(
        "with h as (select client_id, sum(max_price) held, count(*) jobs from jobs where state not in {} "
        "group by client_id) "
        "select count(*) over (), h.client_id, h.held, coalesce(a.balance, 0), h.jobs from h "
        "left join accounts a on a.id = 'client:' || h.client_id where h.held > coalesce(a.balance, 0) "
        "order by h.held - coalesce(a.balance, 0) desc, h.client_id limit 1",
        final_states));
    if (!holds.empty())
      c.add("holds_exceed_balance", holds[0][0].as<std::int64_t>(),
            fmt::format("client '{}' holds {} for {} open job{} but its balance is {}", holds[0][1].c_str(),
                        holds[0][2].c_str(), holds[0][4].c_str(), holds[0][4].as<std::int64_t>() == 1 ? "" : "s",
                        holds[0][3].c_str()));

    // A settled job is in its block: the block its row names lists it at its place (and so was
    // charged by that block's postings, which block_totals checks). A job with no receipt at
    // all is executed_without_receipt instead.
    auto outside = tx.exec("select count(*) over (), j.id, j.block_height, j.block_index from jobs j "
                           "left join blocks b on b.height = j.block_height where j.state = 'SETTLED' "
                           "and (b.height is null or b.job_ids[j.block_index + 1] is distinct from j.id) "
                           "and exists (select 1 from receipts r where r.job_id = j.id) order by j.id limit 1");
    if (!outside.empty())
      c.add("settled_outside_blocks", outside[0][0].as<std::int64_t>(),
            outside[0][2].is_null()
                ? fmt::format("job {} is SETTLED but names no block", outside[0][1].c_str())
                : fmt::format("job {} is SETTLED in block {} at place {}, but that block does not list it there",
                              outside[0][1].c_str(), outside[0][2].c_str(), outside[0][3].c_str()));

    // Only a settled job has postings.
    auto early = tx.exec("select count(*) over (), j.id, j.state from jobs j where j.state <> 'SETTLED' "
                         "and exists (select 1 from postings p where p.job_id = j.id) order by j.id limit 1");
    if (!early.empty())
      c.add("postings_on_unsettled_job", early[0][0].as<std::int64_t>(),
            fmt::format("job {} has postings but is {}", early[0][1].c_str(), early[0][2].c_str()));

    // A job's state changes are its steps, numbered 0, 1, ... with no gap; the row holds the
    // newest (the store writes both in one transaction, and several statements write events).
    // Its steps are its stored events and, once settled, its block's (job_timeline).
    auto timelines = tx.exec(
        "with e as (select job_id, count(*) n, max(seq) top from job_timeline group by job_id) "
        "select count(*) over (), j.id, j.state, j.seq, coalesce(e.n, 0), last.state from jobs j "
        "left join e on e.job_id = j.id left join job_timeline last on last.job_id = j.id and last.seq = j.seq "
        "where coalesce(e.n, 0) <> j.seq + 1 or e.top <> j.seq or last.state is distinct from j.state "
        "order by j.id limit 1");
    if (!timelines.empty())
      c.add("broken_timelines", timelines[0][0].as<std::int64_t>(),
            fmt::format("job {} is {} at seq {} but has {} events, its event at that seq being {}",
                        timelines[0][1].c_str(), timelines[0][2].c_str(), timelines[0][3].c_str(),
                        timelines[0][4].c_str(), timelines[0][5].is_null() ? "missing" : timelines[0][5].c_str()));

    std::stable_sort(a.findings.begin(), a.findings.end(),
                     [](const audit_finding& x, const audit_finding& y) { return order_of(x.kind) < order_of(y.kind); });
    if (!a.findings.empty())
      a.problem = a.findings.front().example;
    return a;
  } catch (const std::exception& e) {
    return make_error(errc::io_error, fmt::format("auditing {}: {}", url, e.what()));
  }
}

result<audit_report> audit(const std::string& url, const std::string& client_id) {
  audit_options o;
  o.client_id = client_id;
  return audit(url, o);
}

result<std::int64_t> count_final(const std::string& url, const std::string& client_id) {
  try {
    pqxx::connection conn{url};
    pqxx::read_transaction tx{conn};
    return tx.exec_params1(fmt::format("select count(*) from jobs where client_id = $1 and state in {}", final_states),
                           client_id)[0]
        .as<std::int64_t>();
  } catch (const std::exception& e) {
    return make_error(errc::io_error, fmt::format("reading job states from {}: {}", url, e.what()));
  }
}

} // namespace haca::db
