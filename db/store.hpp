#pragma once
// The Postgres store: the only code that speaks SQL. Blocking; the `store` actor runs it on a
// thread of its own and feeds it batches (group commit).
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "db/records.hpp"
#include "proto/commands.hpp"
#include "proto/error.hpp"

namespace haca::db {

// One write or read; a batch of them commits in one transaction.
struct insert_job { job_record job; };                  // -> job id, or duplicate_request
struct record_events { std::vector<job_event> events; };
struct upsert_node { proto::capabilities caps; };
struct save_receipt { std::int64_t job_id = 0; verify::receipt receipt; };
struct fund_client { std::string client_id; std::int64_t amount = 0; };
struct settle { settlement batch; };                    // -> block height
struct read_status { std::int64_t job_id = 0; };        // -> proto::status_reply

using operation = std::variant<insert_job, record_events, upsert_node, save_receipt, fund_client, settle, read_status>;

// What each operation answers: nothing, a number (job id, block height) or a status.
using answer = std::variant<std::monostate, std::int64_t, proto::status_reply>;

class store {
public:
  explicit store(const std::string& url);
  ~store();

  result<startup_state> load_startup();
  // Applies all operations in one transaction. If that fails, applies each in a transaction
  // of its own, so one bad operation fails alone. One answer per operation, in order.
  std::vector<result<answer>> apply(const std::vector<operation>& ops);

private:
  struct connection; // the pqxx connection, kept out of this header
  std::unique_ptr<connection> conn_;
  std::string url_;
};

} // namespace haca::db
