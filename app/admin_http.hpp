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

void serve_http(httplib::Server& http, const http_options& o, std::shared_ptr<db::admin_reads> reads,
                std::shared_ptr<actors::metrics> stats, std::shared_ptr<actors::gateway_stats> gateway);

} // namespace haca::app
