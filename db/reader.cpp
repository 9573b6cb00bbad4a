#include "db/reader.hpp"

#include <pqxx/pqxx>

#include <fmt/format.h>

#include "db/rows.hpp"
#include "verify/merkle.hpp"

namespace haca::db {

struct reader::connection {
  explicit connection(const std::string& url) : db(url) {
    db.prepare("job", std::string("select j.state, j.attempt, j.block_height, j.verdict, j.client_id, ") + result_columns +
                          " from jobs j left join receipts r on r.job_id = j.id and r.attempt = j.attempt "
                          "where j.id = $1");
    db.prepare("events", "select state, detail, (extract(epoch from at) * 1000000)::bigint from job_timeline "
                         "where job_id = $1 order by seq, at");
    db.prepare("block", "select * from blocks where height = $1");
    // A block's receipts in its Merkle order: the receipt of the attempt each listed job settled.
    db.prepare("batch", "select v.job_id, r.receipt_hash from blocks b cross join unnest(b.job_ids) with ordinality "
                        "as v (job_id, idx) join jobs j on j.id = v.job_id join receipts r on r.job_id = j.id and "
                        "r.attempt = j.attempt where b.height = $1 order by v.idx");
    db.prepare("request", std::string("select j.id, j.state, ") + result_columns +
                              " from jobs j left join receipts r on r.job_id = j.id and r.attempt = j.attempt "
                              "where j.client_id = $1 and j.client_req_id = $2");
  }
  pqxx::connection db;
};

reader::reader(std::string url) : url_(std::move(url)) {}
reader::~reader() = default;

namespace {

// The job's row with its current attempt's receipt: unknown_job when there is none, forbidden
// when it is another account's.
result<pqxx::row> job_row(pqxx::read_transaction& tx, std::int64_t job_id, const std::string& account) {
  auto rows = tx.exec_prepared("job", job_id);
  if (rows.empty())
    return make_error(errc::unknown_job, fmt::format("no job with id {}", job_id));
  if (rows[0]["client_id"].c_str() != account)
    return make_error(errc::forbidden, fmt::format("job {} is not this account's: only its own client may ask", job_id));
  return rows[0];
}

} // namespace

template <class T, class F>
result<T> reader::read(F&& f, const char* ask_again) {
  try {
    if (!conn_ || !conn_->db.is_open())
      conn_ = std::make_unique<connection>(url_);
    pqxx::read_transaction tx{conn_->db};
    return f(tx);
  } catch (const std::exception& e) {
    conn_.reset(); // made again next time
    return make_error(errc::unavailable, fmt::format("the job store cannot be read right now; {}", ask_again));
  }
}

result<proto::status_reply> reader::status(std::int64_t job_id, const std::string& account) {
  return read<proto::status_reply>([&](pqxx::read_transaction& tx) -> result<proto::status_reply> {
    auto job = job_row(tx, job_id, account);
    if (!job)
      return job.err();
    proto::status_reply out;
    out.job_id = job_id;
    out.state = (*job)[0].c_str();
    out.attempt = (*job)[1].as<std::int32_t>();
    if (auto r = result_of(*job, job_id))
      out.result = proto::status_result{std::move(r->classes), std::move(r->receipt), std::move(r->output)};
    for (const auto& row : tx.exec_prepared("events", job_id))
      out.events.push_back({row[0].c_str(), row[1].c_str(), row[2].as<std::int64_t>()});
    return out;
  }, "ask again shortly");
}

proto::message reader::answer(const core::job_lookup& q) {
  auto reply = [&](auto r, auto make) { return r ? make(r.value()) : proto::make_error(r.err(), "", q.job_id); };
  if (q.command == proto::cmd::receipt)
    return reply(receipt(q.job_id, q.account), proto::make_receipt_reply);
  if (q.command == proto::cmd::proof)
    return reply(proof(q.job_id, q.account), proto::make_proof_reply);
  return reply(status(q.job_id, q.account), proto::make_status_reply);
}

result<proto::receipt_reply> reader::receipt(std::int64_t job_id, const std::string& account) {
  return read<proto::receipt_reply>([&](pqxx::read_transaction& tx) -> result<proto::receipt_reply> {
    auto job = job_row(tx, job_id, account);
    if (!job)
      return job.err();
    auto r = result_of(*job, job_id);
    if (!r)
      return make_error(errc::unknown_job, fmt::format("job {} has no receipt yet ({})", job_id, (*job)[0].c_str()));
    return proto::receipt_reply{job_id, std::move(r->receipt)};
  }, "ask again shortly");
}

result<proto::inclusion_proof> reader::proof(std::int64_t job_id, const std::string& account) {
  return read<proto::inclusion_proof>([&](pqxx::read_transaction& tx) -> result<proto::inclusion_proof> {
    auto job = job_row(tx, job_id, account);
    if (!job)
      return job.err();
    const std::string state = (*job)[0].c_str();
    if (state != "SETTLED")
      return make_error(errc::not_settled, fmt::format("job {} is {}, not in a block yet; ask again after it settles",
                                                       job_id, state));
    proto::inclusion_proof p;
    p.job_id = job_id;
    auto r = result_of(*job, job_id);
    if (!r || (*job)["block_height"].is_null())
      return make_error(errc::not_settled, fmt::format("job {} has no settled receipt", job_id));
    p.receipt = std::move(r->receipt);
    p.verdict = (*job)["verdict"].c_str();
    const auto height = (*job)["block_height"].as<std::int64_t>();
    auto block = tx.exec_prepared("block", height);
    if (block.empty())
      return make_error(errc::unavailable, fmt::format("block {} of job {} is not stored", height, job_id));
    const auto& b = block[0];
    p.block.height = height;
    p.block.prev_hash = b["prev_hash"].c_str();
    p.block.batch_root = b["batch_root"].c_str();
    p.block.receipts = b["receipts"].as<std::int32_t>();
    p.block.total_amount = b["total_amount"].as<std::int64_t>();
    p.block.created_at_us = b["created_at"].as<std::int64_t>();
    p.block.signer_key = b["signer_key"].c_str();
    p.block.signature = b["signature"].c_str();
    std::vector<std::string> leaves;
    for (const auto& row : tx.exec_prepared("batch", height)) {
      if (row["job_id"].as<std::int64_t>() == job_id)
        p.index = static_cast<std::int32_t>(leaves.size());
      leaves.push_back(row["receipt_hash"].c_str());
    }
    p.path = verify::merkle_proof(leaves, static_cast<std::size_t>(p.index));
    return p;
  }, "ask again shortly");
}

result<std::optional<core::existing_job>> reader::find_request(const std::string& client_id,
                                                               const std::string& request_id) {
  using found = std::optional<core::existing_job>;
  return read<found>([&](pqxx::read_transaction& tx) -> result<found> {
    auto rows = tx.exec_prepared("request", client_id, request_id);
    if (rows.empty())
      return found{};
    core::existing_job x;
    x.job_id = rows[0]["id"].as<std::int64_t>();
    x.state = core::parse_state(rows[0]["state"].c_str()).value_or(core::job_state::queued);
    x.result = result_of(rows[0], x.job_id);
    return found{std::move(x)};
  }, "resend shortly");
}

} // namespace haca::db
