#pragma once
// The coordinator's HTTP port: /metrics and the admin API's reads (app/admin_http.cpp).
#include <memory>
#include <string>

#include <httplib.h>

#include "actors/metrics.hpp"
#include "app/http_auth.hpp"
#include "db/admin_reads.hpp"

namespace haca::actors {
struct gateway_stats;
}

namespace haca::app {

// The dashboard's files when --web-dir is not given: the source tree's web/ (set by CMake).
std::string default_web_dir();
// Chart.js as Debian's libjs-chart.js installs it.
inline constexpr const char* chartjs_file = "/usr/share/javascript/chart.js/chart.min.js";

// /metrics; with a read token, /api (reads, GET /api/summary) and the dashboard from `web_dir`
// ("" = default_web_dir()).
void serve_http(httplib::Server& http, const http_options& o, std::shared_ptr<db::admin_reads> reads,
                std::shared_ptr<actors::metrics> stats, std::shared_ptr<actors::gateway_stats> gateway,
                std::string web_dir = {});

// GET / and /web/{index.html,dashboard.js,dashboard.css,chart.js}: the dashboard's static files.
void serve_dashboard(httplib::Server& http, const std::string& web_dir);

} // namespace haca::app
