#include "db/scratch.hpp"

#include <cstdlib>
#include <stdexcept>

#include <pqxx/pqxx>

namespace haca::db {

std::string with_db_name(const std::string& url, const std::string& name) {
  const auto query = url.find('?');
  const auto path_end = query == std::string::npos ? url.size() : query;
  const auto slash = url.rfind('/', path_end);
  if (slash == std::string::npos)
    throw std::runtime_error("cannot find the database name in " + url);
  return url.substr(0, slash + 1) + name + url.substr(path_end);
}

namespace {

void drop(const std::string& base_url, const std::string& name) {
  pqxx::connection c{base_url};
  pqxx::nontransaction tx{c};
  tx.exec("drop database if exists " + tx.quote_name(name) + " with (force)");
}

} // namespace

scratch_database::scratch_database(const std::string& base_url, std::string name, const std::string& source_dir)
    : base_url_(base_url), name_(std::move(name)), url_(with_db_name(base_url, name_)) {
  drop(base_url_, name_);
  {
    pqxx::connection c{base_url_};
    pqxx::nontransaction tx{c};
    tx.exec("create database " + tx.quote_name(name_));
  }
  const auto command = source_dir + "/deploy/migrate.sh '" + url_ + "' > /dev/null 2>&1";
  if (std::system(command.c_str()) != 0)
    throw std::runtime_error("migrations failed on " + url_ + " (" + command + ")");
}

scratch_database::~scratch_database() {
  if (keep_)
    return;
  try {
    drop(base_url_, name_);
  } catch (const std::exception&) {
    // Nothing to do about it here; a later run drops a database of the same name first.
  }
}

} // namespace haca::db
