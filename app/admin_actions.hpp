#pragma once
// The admin API's actions (app/admin_actions.cpp): drain, ban, the fee and sample rate, deposits.
#include <caf/all.hpp>
#include <httplib.h>

#include "app/http_auth.hpp"

namespace haca::app {

// POST routes on `http`, each carried out by the execution core (actor `job_queue`) and
// answered once its record is committed.
void serve_admin_actions(httplib::Server& http, const http_options& o, caf::actor_system& sys, caf::actor job_queue);

} // namespace haca::app
