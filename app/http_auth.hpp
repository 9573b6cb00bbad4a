#pragma once
// Bearer tokens of the coordinator's HTTP port (app/admin_http.cpp, app/admin_actions.cpp).
// One read token reads /api and /metrics; admin tokens also act, each under its operator's
// name, which the audit trail records as who did it. No token or an unknown one is 401; a
// read token on an admin action is 403.
#include <optional>
#include <string>
#include <vector>

#include <httplib.h>

#include "proto/error.hpp"

namespace haca::app {

struct admin_token {
  std::string name;   // who: recorded with every action taken with it
  std::string secret;
};

struct http_options {
  std::string read_token;            // "" = no API (and /metrics open)
  std::vector<admin_token> admin_tokens;
};

// "NAME:TOKEN" or "TOKEN" (named "admin"): a name is 1-32 of [a-z0-9_.-]; a token 16+ printable
// characters without spaces.
result<admin_token> parse_admin_token(const std::string& text);

enum class scope { none, read, admin };

// Who may do what: the 401 or 403 is written into `res` when the request may not; else the
// caller's name ("read" for the read token).
std::optional<std::string> authorize(const httplib::Request& req, httplib::Response& res, const http_options& o,
                                     scope needed);

// A JSON error body {"error":{"code","reason"}} with this HTTP status.
void reply_error(httplib::Response& res, int status, const std::string& code, const std::string& reason);

} // namespace haca::app
