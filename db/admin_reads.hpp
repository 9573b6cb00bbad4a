#pragma once
// The admin API's reads (app/admin_http.cpp): what Postgres committed, as JSON, one page at a
// time. Every list is keyset-paginated (`after` the last key of the previous page, `limit` at
// most max_page rows) and reads no more rows than it returns, plus one to know whether another
// page follows. Filters are bound parameters, never SQL text.
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "proto/error.hpp"

namespace haca::db {

inline constexpr int max_page = 500;

struct page_request {
  std::string after;   // the key the previous page ended on ("" = from the start)
  int limit = 100;     // 1 .. max_page
};

struct job_filter {
  std::string state;    // "" = any; else a state name (QUEUED, SETTLED, ...)
  std::string client;   // "" = any
  std::string provider; // "" = any
  std::optional<std::int64_t> since_us, until_us; // submitted in [since, until), unix microseconds
};

// An RFC 3339 UTC time as the API writes them ("2026-12-06T03:21:56.497366Z", the fraction
// optional) in unix microseconds; nothing when it is not one (or not a real date).
std::optional<std::int64_t> parse_utc(const std::string& text);

// One connection, reconnected when it breaks; each call is one read-only transaction. Calls
// are serialized (the HTTP server runs handlers on several threads).
class admin_reads {
public:
  explicit admin_reads(std::string url);
  ~admin_reads();
  // {items: [...], next: "<after for the next page>" | null}
  result<nlohmann::json> providers(const page_request& p);
  result<nlohmann::json> jobs(const job_filter& f, const page_request& p);
  result<nlohmann::json> job(std::int64_t id); // the row, its events, receipts and rulings; null when none
  result<nlohmann::json> disputes(const page_request& p);
  result<nlohmann::json> blocks(const page_request& p); // newest first
  result<nlohmann::json> accounts(const std::string& prefix, const page_request& p);
  result<nlohmann::json> actions(const page_request& p); // the operators' audit trail, newest first
  result<nlohmann::json> postings(const std::string& account, const page_request& p); // newest first; "" = all

  // The newest block {height, hash, created_at_us} (null when none): one row by the primary key.
  result<nlohmann::json> chain_head();
  // The ledger's balances summed per account kind (the id's text before ':': client, provider,
  // stake, fees, mint, ...): {kind: {balance, accounts}}. A grouped scan of the accounts table
  // (one row per participant, never per job), run at most once per `ledger_every`: requests in
  // between get the same answer, so the request rate does not multiply the scans.
  result<nlohmann::json> ledger_totals();
  static constexpr std::chrono::milliseconds ledger_every{2000};

private:
  template <class F>
  result<nlohmann::json> read(F&& f);
  struct connection;
  std::mutex mu_;
  std::unique_ptr<connection> conn_;
  std::string url_;
  std::optional<nlohmann::json> ledger_;                   // the last grouped sum, and when
  std::chrono::steady_clock::time_point ledger_at_{};
};

} // namespace haca::db
