#pragma once
// Reads for clients (STATUS) on a connection of their own, so they never wait behind the
// write queue. What they see is what Postgres committed: nothing is told that a crash could
// take back.
#include <memory>
#include <string>

#include "core/records.hpp"
#include "proto/commands.hpp"

namespace haca::db {

class reader {
public:
  explicit reader(std::string url);
  ~reader();
  // The reply to a STATUS, RECEIPT or PROOF: that command's, or ERROR (unknown_job: no such job
  // or no receipt yet; forbidden: another account's job; not_settled: no block yet;
  // unavailable: Postgres cannot be read).
  proto::message answer(const core::job_lookup& q);
  result<proto::status_reply> status(std::int64_t job_id, const std::string& account);
  result<proto::receipt_reply> receipt(std::int64_t job_id, const std::string& account);
  result<proto::inclusion_proof> proof(std::int64_t job_id, const std::string& account);
  // The job that holds a client's request id, with its receipt and output when it has them.
  result<std::optional<core::existing_job>> find_request(const std::string& client_id, const std::string& request_id);

private:
  template <class T, class F>
  result<T> read(F&& f, const char* ask_again); // f(read transaction); a failure is `unavailable`
  struct connection;
  std::unique_ptr<connection> conn_;
  std::string url_;
};

} // namespace haca::db
