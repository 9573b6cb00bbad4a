#include "app/http_auth.hpp"

#include <algorithm>

#include <sodium.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace haca::app {

void reply_error(httplib::Response& res, int status, const std::string& code, const std::string& reason) {
  res.status = status;
  res.set_content(nlohmann::json{{"error", {{"code", code}, {"reason", reason}}}}.dump(), "application/json");
}

result<admin_token> parse_admin_token(const std::string& text) {
  admin_token t{"admin", text};
  if (const auto colon = text.find(':'); colon != std::string::npos) {
    t.name = text.substr(0, colon);
    t.secret = text.substr(colon + 1);
  }
  const bool name_ok = !t.name.empty() && t.name.size() <= 32 && std::all_of(t.name.begin(), t.name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
  });
  if (!name_ok)
    return make_error(errc::bad_input, fmt::format("admin-token: the name before ':' must be 1-32 of a-z 0-9 _ . -, "
                                                   "got '{}'",
                                                   t.name));
  if (t.secret.size() < 16 || !std::all_of(t.secret.begin(), t.secret.end(), [](char c) { return c > 0x20 && c < 0x7f; }))
    return make_error(errc::bad_input, fmt::format("admin-token '{}': the token needs 16 or more printable characters "
                                                   "without spaces",
                                                   t.name));
  return t;
}

namespace {

bool same_token(const std::string& given, const std::string& want) {
  return !want.empty() && given.size() == want.size() &&
         sodium_memcmp(given.data(), want.data(), want.size()) == 0; // constant time
}

} // namespace

std::optional<std::string> authorize(const httplib::Request& req, httplib::Response& res, const http_options& o,
                                     scope needed) {
  const auto h = req.get_header_value("Authorization");
  const std::string prefix = "Bearer ";
  if (h.rfind(prefix, 0) == 0) {
    const auto token = h.substr(prefix.size());
    for (const auto& a : o.admin_tokens)
      if (same_token(token, a.secret))
        return a.name;
    if (same_token(token, o.read_token)) {
      if (needed != scope::admin)
        return std::string("read");
      reply_error(res, 403, errc::forbidden, "the read token may only read; this action needs an admin token");
      return std::nullopt;
    }
  }
  res.set_header("WWW-Authenticate", "Bearer realm=\"haca\"");
  reply_error(res, 401, "unauthorized",
              req.has_header("Authorization") ? "the bearer token is not one of this coordinator's"
                                              : "send 'Authorization: Bearer <token>' (read-token or an admin-token "
                                                "from the coordinator's config)");
  return std::nullopt;
}

} // namespace haca::app
