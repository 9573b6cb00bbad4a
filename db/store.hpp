#pragma once
// The Postgres store: the only code that writes SQL. Blocking; the `store` actor runs it on a
// thread of its own and hands it the records of many core steps at once (group commit).
//
// Every record is applied idempotently (core/records.hpp says by which key), so after a lost
// confirmation the same records can simply be applied again. Statements are prepared and take
// arrays (one statement per kind of record per commit, whatever the number of rows); no SQL
// text is built from a record's values.
#include <memory>
#include <string>
#include <vector>

#include "core/records.hpp"
#include "proto/error.hpp"

namespace haca::db {

// The store could not reach a verdict on a commit (connection lost, server restarting, a
// timeout): the records may or may not be applied. Apply them again later.
struct transient_error {
  std::string reason;
};

class store {
public:
  explicit store(std::string url); // connects lazily: a down server is a transient error
  ~store();

  // What Postgres has committed, for the cores to be rebuilt from.
  result<core::snapshot> load_snapshot();

  // Applies the records in one transaction and returns one outcome per record. When that
  // transaction fails on a record (bad data, a broken invariant), each record is applied in a
  // transaction of its own, so a bad record is `rejected` alone. A transient failure returns
  // transient_error and nothing is decided.
  std::variant<std::vector<core::outcome>, transient_error> apply(const std::vector<core::record>& records);

private:
  struct connection;
  connection& conn(); // (re)connects; throws on failure
  std::unique_ptr<connection> conn_;
  std::string url_;
};

// A bad record (as opposed to a transient failure): thrown inside a transaction.
struct bad_record : std::runtime_error {
  bad_record(const std::string& what, std::vector<std::int64_t> jobs = {})
      : std::runtime_error(what), bad_jobs(std::move(jobs)) {}
  std::vector<std::int64_t> bad_jobs;
};

} // namespace haca::db
