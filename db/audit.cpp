#include "db/audit.hpp"

#include <map>
#include <pqxx/pqxx>

#include <fmt/format.h>

#include "verify/merkle.hpp"
#include "verify/receipt.hpp"

namespace haca::db {
namespace {

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

} // namespace

result<audit_report> audit(const std::string& url, const std::string& client_id) {
  try {
    pqxx::connection conn{url};
    pqxx::read_transaction tx{conn};
    audit_report a;
    auto note = [&](bool& flag, std::string problem) {
      if (flag && a.problem.empty())
        a.problem = std::move(problem);
      flag = false;
    };
    std::string where = client_id.empty() ? "true" : "j.client_id = " + tx.quote(client_id);
    auto counts = tx.exec1("select count(*), count(*) filter (where j.state = 'SETTLED'), "
                           "count(*) filter (where j.state in ('FAILED', 'EXPIRED')), "
                           "count(*) filter (where r.verdict = 'verified'), "
                           "count(*) filter (where r.verdict = 'unsampled'), "
                           "count(*) filter (where r.verdict = 'mismatch') "
                           "from jobs j left join receipts r on r.job_id = j.id where " + where);
    a.jobs = counts[0].as<std::int64_t>();
    a.settled = counts[1].as<std::int64_t>();
    a.failed = counts[2].as<std::int64_t>();
    a.verified = counts[3].as<std::int64_t>();
    a.unsampled = counts[4].as<std::int64_t>();
    a.disputed = counts[5].as<std::int64_t>();

    for (const auto& row : tx.exec("select r.* from receipts r join jobs j on j.id = r.job_id where " + where)) {
      ++a.receipts_checked;
      if (!verify::verify_receipt(receipt_from_row(row)))
        note(a.receipts_valid, fmt::format("receipt of job {} does not verify", row["job_id"].c_str()));
    }

    // The chain: heights from 0, each prev_hash the block before's hash, hashes and signatures
    // recomputed, each batch root rebuilt from its receipts in batch order.
    std::map<std::int64_t, std::vector<std::string>> leaves;
    for (const auto& row : tx.exec("select * from receipts where block_height is not null order by block_height, "
                                   "block_index"))
      leaves[row["block_height"].as<std::int64_t>()].push_back(verify::receipt_hash(receipt_from_row(row)));
    std::string prev(64, '0');
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
      if (b.height != a.blocks)
        note(a.chain_valid, fmt::format("block heights jump from {} to {}", a.blocks - 1, b.height));
      if (b.prev_hash != prev)
        note(a.chain_valid, fmt::format("block {} does not link to the block before it", b.height));
      if (verify::block_hash(b) != row["block_hash"].c_str())
        note(a.chain_valid, fmt::format("block {}'s stored hash differs from its contents", b.height));
      if (!verify::verify_block(b))
        note(a.chain_valid, fmt::format("block {}'s signature does not verify", b.height));
      if (verify::merkle_root(leaves[b.height]) != b.batch_root)
        note(a.chain_valid, fmt::format("block {}'s batch root does not match its receipts", b.height));
      prev = row["block_hash"].c_str();
      ++a.blocks;
    }

    if (tx.exec1("select coalesce(sum(amount), 0) from postings")[0].as<std::int64_t>() != 0)
      note(a.postings_balanced, "the postings do not sum to zero");
    auto unbalanced = tx.exec("select job_id from postings where job_id is not null group by job_id "
                              "having sum(amount) <> 0 limit 1");
    if (!unbalanced.empty())
      note(a.postings_balanced, fmt::format("the postings of job {} do not sum to zero", unbalanced[0][0].c_str()));
    auto drift = tx.exec("select a.id from accounts a left join (select account, sum(amount) s from postings group by "
                         "account) p on p.account = a.id where a.balance <> coalesce(p.s, 0) limit 1");
    if (!drift.empty())
      note(a.postings_balanced, fmt::format("account {}'s balance differs from its postings", drift[0][0].c_str()));
    return a;
  } catch (const std::exception& e) {
    return make_error(errc::io_error, fmt::format("auditing {}: {}", url, e.what()));
  }
}

result<std::int64_t> count_final(const std::string& url, const std::string& client_id) {
  try {
    pqxx::connection conn{url};
    pqxx::read_transaction tx{conn};
    return tx.exec1("select count(*) from jobs where client_id = " + tx.quote(client_id) +
                    " and state in ('SETTLED', 'FAILED', 'EXPIRED', 'CANCELLED')")[0]
        .as<std::int64_t>();
  } catch (const std::exception& e) {
    return make_error(errc::io_error, fmt::format("reading job states from {}: {}", url, e.what()));
  }
}

} // namespace haca::db
