#include "db/reader.hpp"

#include <pqxx/pqxx>

#include <fmt/format.h>

#include "db/rows.hpp"

namespace haca::db {

struct reader::connection {
  explicit connection(const std::string& url) : db(url) {
    db.prepare("job", std::string("select j.state, j.attempt, ") + result_columns +
                          " from jobs j left join receipts r on r.job_id = j.id and r.attempt = j.attempt "
                          "where j.id = $1");
    db.prepare("events", "select state, detail, (extract(epoch from at) * 1000000)::bigint from job_events "
                         "where job_id = $1 order by seq, at");
    db.prepare("request", std::string("select j.id, j.state, ") + result_columns +
                              " from jobs j left join receipts r on r.job_id = j.id and r.attempt = j.attempt "
                              "where j.client_id = $1 and j.client_req_id = $2");
  }
  pqxx::connection db;
};

reader::reader(std::string url) : url_(std::move(url)) {}
reader::~reader() = default;

result<proto::status_reply> reader::status(std::int64_t job_id) {
  try {
    if (!conn_ || !conn_->db.is_open())
      conn_ = std::make_unique<connection>(url_);
    pqxx::read_transaction tx{conn_->db};
    auto job = tx.exec_prepared("job", job_id);
    if (job.empty())
      return make_error(errc::unknown_job, fmt::format("no job with id {}", job_id));
    proto::status_reply out;
    out.job_id = job_id;
    out.state = job[0][0].c_str();
    out.attempt = job[0][1].as<std::int32_t>();
    if (auto r = result_of(job[0], job_id))
      out.result = proto::status_result{std::move(r->classes), std::move(r->receipt), std::move(r->output)};
    for (const auto& row : tx.exec_prepared("events", job_id))
      out.events.push_back({row[0].c_str(), row[1].c_str(), row[2].as<std::int64_t>()});
    return out;
  } catch (const std::exception& e) {
    conn_.reset();
    return make_error(errc::unavailable, "the job store cannot be read right now; ask again shortly");
  }
}

result<std::optional<core::existing_job>> reader::find_request(const std::string& client_id,
                                                               const std::string& request_id) {
  try {
    if (!conn_ || !conn_->db.is_open())
      conn_ = std::make_unique<connection>(url_);
    pqxx::read_transaction tx{conn_->db};
    auto rows = tx.exec_prepared("request", client_id, request_id);
    if (rows.empty())
      return std::optional<core::existing_job>{};
    core::existing_job x;
    x.job_id = rows[0]["id"].as<std::int64_t>();
    x.state = core::parse_state(rows[0]["state"].c_str()).value_or(core::job_state::queued);
    x.result = result_of(rows[0], x.job_id);
    return std::optional<core::existing_job>{std::move(x)};
  } catch (const std::exception& e) {
    conn_.reset();
    return make_error(errc::unavailable, "the job store cannot be read right now; resend shortly");
  }
}

} // namespace haca::db
