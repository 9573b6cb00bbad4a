// The coordinator's HTTP port (--http-port): the admin API's reads under /api (JSON, one page
// at a time) and /metrics (Prometheus text format). Bearer tokens from the config file: the
// read token (or the admin token) reads; no token or an unknown one is 401. The API is served
// only when a read token is set; /metrics then needs it too, and is open otherwise (a
// Prometheus on the same host). With the API on, it also serves the dashboard: web/ (static
// files; the page asks for the read token and sends it with each API call) at / and /web/.
#include "app/admin_http.hpp"

#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "actors/gateway.hpp"
#include "actors/messages.hpp"
#include "core/job_state.hpp"
#include "proto/commands.hpp"

namespace haca::app {
namespace {

using json = nlohmann::json;

// The request may read: else the 401 is written.
bool may_read(const httplib::Request& req, httplib::Response& res, const http_options& o) {
  return authorize(req, res, o, scope::read).has_value();
}

// A query parameter, checked: at most 128 printable characters.
std::optional<std::string> param(const httplib::Request& req, httplib::Response& res, const char* name) {
  const auto v = req.get_param_value(name);
  if (v.size() > 128 || !std::all_of(v.begin(), v.end(), [](char c) { return c > 0x20 && c < 0x7f; })) {
    reply_error(res, 400, errc::bad_input, fmt::format("parameter '{}' must be at most 128 printable characters", name));
    return std::nullopt;
  }
  return v;
}

std::optional<db::page_request> page_of(const httplib::Request& req, httplib::Response& res) {
  db::page_request p;
  auto after = param(req, res, "after");
  auto limit = param(req, res, "limit");
  if (!after || !limit)
    return std::nullopt;
  p.after = *after;
  if (!limit->empty()) {
    try {
      std::size_t used = 0;
      p.limit = std::stoi(*limit, &used);
      if (used != limit->size() || p.limit < 1 || p.limit > db::max_page)
        throw std::out_of_range("limit");
    } catch (const std::exception&) {
      reply_error(res, 400, errc::bad_input,
                  fmt::format("'limit' must be an integer from 1 to {}, got '{}'", db::max_page, *limit));
      return std::nullopt;
    }
  }
  return p;
}

// An HTTP-only error code: a file of the dashboard that is not there.
constexpr const char* not_found = "not_found";

json or_null(const std::optional<double>& v) { return v ? json(*v) : json(nullptr); }

// Queue depth, jobs by state, the recent rate and latency, verification, settlement and the
// ledger, as the dashboard shows them. In-memory counters and gauges (actors/metrics), the
// chain head by the blocks' primary key, the ledger's grouped sum at most once per 2 s
// (db::admin_reads::ledger_totals): nothing here grows with the number of jobs.
result<json> summary(db::admin_reads& reads, actors::metrics& stats) {
  constexpr std::size_t top_clients = 20;
  const auto m = stats.read(top_clients, actors::metrics::clock_us());
  auto head = reads.chain_head();
  if (!head)
    return head.err();
  auto ledger = reads.ledger_totals();
  if (!ledger)
    return ledger.err();
  const auto now = actors::now_us();
  const auto entered = [&](core::job_state s) { return m.entered[static_cast<std::size_t>(s)]; };
  json by_state = json::object(), now_in = json::object();
  for (int s = 0; s < core::job_state_count; ++s)
    if (s != static_cast<int>(core::job_state::submitted)) { // never committed as such
      by_state[core::state_name(static_cast<core::job_state>(s))] = m.entered[static_cast<std::size_t>(s)];
      now_in[core::state_name(static_cast<core::job_state>(s))] = m.now[static_cast<std::size_t>(s)];
    }
  json clients = json::array();
  for (const auto& [client, n] : m.top_queues)
    clients.push_back(json{{"client", client}, {"waiting", n}});
  const auto& h = head.value();
  json settlement{{"blocks", h.is_null() ? 0 : h["height"].get<std::int64_t>() + 1},
                  {"head", h},
                  {"head_age_s", h.is_null() ? json(nullptr)
                                             : json(static_cast<double>(now - h["created_at_us"].get<std::int64_t>()) / 1e6)},
                  {"settled", entered(core::job_state::settled)},
                  {"backlog", m.settlement_backlog}};
  return json{
      {"at_us", now},
      {"queue", {{"waiting", m.jobs_waiting}, {"open", m.jobs_open}, {"clients_waiting", m.clients_waiting},
                 {"by_client", clients}}},
      {"jobs_entered", by_state},
      {"jobs_now", now_in},
      {"recent", {{"window_s", m.recent.window_s}, {"results", m.recent.results}, {"jobs_per_s", m.recent.jobs_per_s},
                  {"p50_ms", or_null(m.recent.p50_ms)}, {"p99_ms", or_null(m.recent.p99_ms)}}},
      {"nodes", {{"providers", m.provider_sessions}, {"verifiers", m.verifier_sessions}}},
      {"verification", {{"sampled", entered(core::job_state::verified) + entered(core::job_state::disputed)},
                        {"verified", entered(core::job_state::verified)},
                        {"unsampled", entered(core::job_state::unsampled)},
                        {"disputed", entered(core::job_state::disputed)},
                        {"rulings", m.rulings},
                        {"slashes", m.slashes},
                        {"backlog", m.verification_backlog}}},
      {"settlement", settlement},
      {"ledger", ledger.value()},
      {"staked", m.staked_total}};
}

// The live fields of a node's row: its session (as of the last heartbeat), its load and what it
// did; a provider's reputation too.
json live(const actors::metrics& stats, const json& row) {
  if (!row.contains("role") || !row["key"].is_string())
    return nullptr;
  const auto& key = row["key"].get_ref<const std::string&>();
  const bool provider = row["role"] == "provider";
  const auto p = provider ? stats.provider(key) : stats.verifier(key);
  json out{{"connected", p.connected},
           {"silent_s", or_null(p.silent_seconds)},
           {"credit", p.credit ? json(*p.credit) : json(nullptr)},
           {"load", p.load},
           {"done", p.done}};
  if (provider) {
    out["reputation"] = market::reputation(p.record);
    out["verified"] = p.record.verified;
    out["disputes_lost"] = p.record.disputes_lost;
  }
  return out;
}

// The ledger's totals per account kind in the text format, after the rest of /metrics.
std::string ledger_metrics(db::admin_reads& reads) {
  std::string out = "# HELP haca_ledger_balance_micros Sum of the balances of each kind of account (client, provider, "
                    "stake, ...), read from Postgres at most every 2 s.\n# TYPE haca_ledger_balance_micros gauge\n";
  auto totals = reads.ledger_totals();
  if (totals) // when it cannot be read, the gauge below says so; the rest of /metrics is still worth scraping
    for (const auto& [kind, v] : totals.value().items())
      out += fmt::format("haca_ledger_balance_micros{{kind=\"{}\"}} {}\n", kind, v["balance"].get<std::int64_t>());
  return out + fmt::format("# HELP haca_ledger_read_ok Whether the ledger totals could be read (0: Postgres "
                           "unavailable).\n# TYPE haca_ledger_read_ok gauge\nhaca_ledger_read_ok {}\n",
                           totals ? 1 : 0);
}

std::optional<std::string> slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in)
    return std::nullopt;
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// The page is static; the data comes from /api with the token the page holds. Nothing from
// another origin runs on it.
void page_headers(httplib::Response& res) {
  res.set_header("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:");
  res.set_header("X-Content-Type-Options", "nosniff");
  res.set_header("Cache-Control", "no-cache");
}

void send(httplib::Response& res, const result<json>& r) {
  if (!r) {
    reply_error(res, r.err().code == errc::bad_input ? 400 : 503, r.err().code, r.err().reason);
    return;
  }
  res.set_content(r.value().dump(), "application/json");
}

} // namespace

std::string default_web_dir() {
#ifdef HACA_WEB_DIR
  return HACA_WEB_DIR;
#else
  return "web";
#endif
}

void serve_http(httplib::Server& http, const http_options& o, std::shared_ptr<db::admin_reads> reads,
                std::shared_ptr<actors::metrics> stats, std::shared_ptr<actors::gateway_stats> gateway,
                std::string web_dir) {
  http.Get("/metrics", [o, stats, gateway, reads](const httplib::Request& req, httplib::Response& res) {
    if (!o.read_token.empty() && !may_read(req, res, o))
      return;
    res.set_content(stats->render(*gateway) + ledger_metrics(*reads), "text/plain; version=0.0.4; charset=utf-8");
  });
  if (o.read_token.empty())
    return; // no tokens: no API
  const auto list = [&http, o](const char* path, auto reader) {
    http.Get(path, [o, reader](const httplib::Request& req, httplib::Response& res) {
      if (!may_read(req, res, o))
        return;
      if (auto p = page_of(req, res))
        send(res, reader(req, res, *p));
    });
  };
  list("/api/providers", [reads, stats](const auto&, auto&, const db::page_request& p) {
    auto r = reads->providers(p);
    if (r)
      for (auto& row : r.value()["items"])
        row["live"] = live(*stats, row);
    return r;
  });
  http.Get("/api/summary", [o, reads, stats](const httplib::Request& req, httplib::Response& res) {
    if (may_read(req, res, o))
      send(res, summary(*reads, *stats));
  });
  list("/api/disputes", [reads](const auto&, auto&, const db::page_request& p) { return reads->disputes(p); });
  list("/api/blocks", [reads](const auto&, auto&, const db::page_request& p) { return reads->blocks(p); });
  list("/api/actions", [reads](const auto&, auto&, const db::page_request& p) { return reads->actions(p); });
  list("/api/postings", [reads](const httplib::Request& req, httplib::Response& res, const db::page_request& p) {
    auto account = param(req, res, "account");
    return account ? reads->postings(*account, p) : result<json>(make_error(errc::bad_input, "bad 'account'"));
  });
  list("/api/accounts", [reads](const httplib::Request& req, httplib::Response& res, const db::page_request& p) {
    auto prefix = param(req, res, "prefix");
    return prefix ? reads->accounts(*prefix, p) : result<json>(make_error(errc::bad_input, "bad 'prefix'"));
  });
  list("/api/jobs", [reads](const httplib::Request& req, httplib::Response& res, const db::page_request& p) {
    db::job_filter f;
    auto state = param(req, res, "state");
    auto client = param(req, res, "client");
    auto provider = param(req, res, "provider");
    if (!state || !client || !provider)
      return result<json>(make_error(errc::bad_input, "bad filter"));
    if (!state->empty() && !core::parse_state(*state))
      return result<json>(make_error(errc::bad_input, fmt::format("'state' must be a job state (QUEUED, ASSIGNED, "
                                                                  "EXECUTED, ..., SETTLED), got '{}'",
                                                                  *state)));
    f.state = *state;
    f.client = *client;
    f.provider = *provider;
    for (auto [name, bound] : {std::pair{"since", &f.since_us}, std::pair{"until", &f.until_us}}) {
      auto text = param(req, res, name);
      if (!text)
        return result<json>(make_error(errc::bad_input, "bad filter"));
      if (text->empty())
        continue;
      *bound = db::parse_utc(*text);
      if (!*bound)
        return result<json>(make_error(errc::bad_input, fmt::format("'{}' must be a UTC time like "
                                                                    "2026-12-06T03:21:56Z (a fraction of up to 6 "
                                                                    "digits allowed), got '{}'",
                                                                    name, *text)));
    }
    return reads->jobs(f, p);
  });
  http.Get(R"(/api/jobs/(\d{1,18}))", [o, reads](const httplib::Request& req, httplib::Response& res) {
    if (!may_read(req, res, o))
      return;
    auto r = reads->job(std::stoll(req.matches[1].str()));
    if (r && r.value().is_null())
      return reply_error(res, 404, errc::unknown_job, "no job " + req.matches[1].str());
    send(res, r);
  });
  serve_dashboard(http, web_dir.empty() ? default_web_dir() : web_dir);
}

void serve_dashboard(httplib::Server& http, const std::string& web_dir) {
  namespace fs = std::filesystem;
  if (!fs::is_regular_file(fs::path(web_dir) / "index.html")) {
    spdlog::warn("coordinator: no dashboard: {}/index.html is missing (--web-dir names the folder of haca's web/)",
                 web_dir);
    http.Get("/", [web_dir](const httplib::Request&, httplib::Response& res) {
      reply_error(res, 404, not_found,
                  "no dashboard here: " + web_dir + "/index.html is missing (start the coordinator with --web-dir "
                                                    "set to the folder of haca's web/)");
    });
    return;
  }
  const auto file = [&http](const std::string& path, fs::path source, const char* type, const char* missing) {
    http.Get(path, [source, type, missing](const httplib::Request&, httplib::Response& res) {
      auto body = slurp(source);
      if (!body)
        return reply_error(res, 404, not_found, fmt::format("{} cannot be read: {}", source.string(), missing));
      page_headers(res);
      res.set_content(*body, type);
    });
  };
  // Fixed names only: nothing from the request becomes a path.
  file("/", fs::path(web_dir) / "index.html", "text/html; charset=utf-8", "reinstall haca's web/");
  for (const auto& [name, type] : {std::pair{"index.html", "text/html; charset=utf-8"},
                                   std::pair{"dashboard.js", "text/javascript; charset=utf-8"},
                                   std::pair{"dashboard.css", "text/css; charset=utf-8"}})
    file(std::string("/web/") + name, fs::path(web_dir) / name, type, "reinstall haca's web/");
  file("/web/chart.js", chartjs_file, "text/javascript; charset=utf-8",
       "install Debian's libjs-chart.js (deploy/setup.sh does)");
}

} // namespace haca::app
