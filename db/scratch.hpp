#pragma once
// A database of its own on the server of a base URL, migrated like the real ones
// (deploy/migrate.sh) and dropped at the end: what the integration tests and bench_settlement
// write into, so nothing they do meets another run's rows.
#include <string>

namespace haca::db {

// `url` with its database name replaced by `name` (the query string kept).
std::string with_db_name(const std::string& url, const std::string& name);

class scratch_database {
public:
  // Drops any database of that name first; throws when it cannot be made or migrated.
  scratch_database(const std::string& base_url, std::string name, const std::string& source_dir);
  ~scratch_database(); // drops it, unless keep()
  scratch_database(const scratch_database&) = delete;
  scratch_database& operator=(const scratch_database&) = delete;
  const std::string& url() const { return url_; }
  const std::string& name() const { return name_; }
  void keep() { keep_ = true; }

private:
  std::string base_url_, name_, url_;
  bool keep_ = false;
};

} // namespace haca::db
