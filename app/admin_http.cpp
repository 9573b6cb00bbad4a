// The coordinator's HTTP port (--http-port): the admin API's reads under /api (JSON, one page
// at a time) and /metrics (Prometheus text format). Bearer tokens from the config file: the
// read token (or the admin token) reads; no token or an unknown one is 401. The API is served
// only when a read token is set; /metrics then needs it too, and is open otherwise (a
// Prometheus on the same host).
#include "app/admin_http.hpp"

#include <fmt/format.h>

#include "actors/gateway.hpp"
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

void send(httplib::Response& res, const result<json>& r) {
  if (!r) {
    reply_error(res, r.err().code == errc::bad_input ? 400 : 503, r.err().code, r.err().reason);
    return;
  }
  res.set_content(r.value().dump(), "application/json");
}

} // namespace

void serve_http(httplib::Server& http, const http_options& o, std::shared_ptr<db::admin_reads> reads,
                std::shared_ptr<actors::metrics> stats, std::shared_ptr<actors::gateway_stats> gateway) {
  http.Get("/metrics", [o, stats, gateway](const httplib::Request& req, httplib::Response& res) {
    if (!o.read_token.empty() && !may_read(req, res, o))
      return;
    res.set_content(stats->render(*gateway), "text/plain; version=0.0.4; charset=utf-8");
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
  list("/api/providers", [reads](const auto&, auto&, const db::page_request& p) { return reads->providers(p); });
  list("/api/disputes", [reads](const auto&, auto&, const db::page_request& p) { return reads->disputes(p); });
  list("/api/blocks", [reads](const auto&, auto&, const db::page_request& p) { return reads->blocks(p); });
  list("/api/actions", [reads](const auto&, auto&, const db::page_request& p) { return reads->actions(p); });
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
}

} // namespace haca::app
