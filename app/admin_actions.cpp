// The admin API's actions, for an admin token only (a read token gets 403). Each is an
// admin_order for the execution core, which records it with who took it (the token's name) in
// admin_actions, carries it out once committed, and answers; the HTTP reply waits for that
// answer. A timeout is 504 "unknown": resend with the same request_id (an action's ref), which
// repeats nothing that was done.
//
//   POST /api/nodes/KEY/drain | undrain | ban | unban   {"request_id"?}
//   POST /api/settings                                  {"fee_bps"? , "sample_rate"?, "request_id"?}
//   POST /api/deposits                                  {"to", "account", "amount", "request_id"}
#include "app/admin_actions.hpp"

#include <algorithm>
#include <chrono>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "actors/messages.hpp"
#include "app/common.hpp"
#include "core/events.hpp"
#include "proto/commands.hpp"

namespace haca::app {
namespace {

using json = nlohmann::json;
constexpr auto answer_timeout = std::chrono::seconds(10);

// The request's body as a JSON object (an empty body is {}), or the 400 is written.
std::optional<json> body_of(const httplib::Request& req, httplib::Response& res) {
  if (req.body.empty())
    return json::object();
  auto j = json::parse(req.body, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    reply_error(res, 400, errc::bad_input, "the body must be a JSON object");
    return std::nullopt;
  }
  return j;
}

// The body's request_id (an id: 1-128 printable ASCII characters), or a fresh random one.
std::optional<std::string> request_id_of(const json& body, httplib::Response& res) {
  auto it = body.find("request_id");
  if (it == body.end())
    return random_hex(12);
  if (!it->is_string() || !proto::is_id(it->get_ref<const std::string&>())) {
    reply_error(res, 400, errc::bad_input, "'request_id' must be 1 to 128 printable ASCII characters");
    return std::nullopt;
  }
  return it->get<std::string>();
}

class actions {
public:
  actions(const http_options& o, caf::actor_system& sys, caf::actor job_queue)
      : options_(o), sys_(sys), job_queue_(std::move(job_queue)) {}

  // An action's request: who may take it (the admin token's name), its body and its request
  // id; or the 401, 403 or 400 is written.
  struct request {
    std::string who;
    json body;
    std::string id;
  };
  std::optional<request> begin(const httplib::Request& req, httplib::Response& res,
                               std::initializer_list<std::string_view> keys) const {
    auto who = authorize(req, res, options_, scope::admin);
    auto body = who ? body_of(req, res) : std::nullopt;
    if (body)
      for (const auto& [key, value] : body->items())
        if (key != "request_id" && std::find(keys.begin(), keys.end(), key) == keys.end()) {
          // A typo must not pass for an action with a default: say which key is not known.
          reply_error(res, 400, errc::bad_input,
                      fmt::format("unknown key '{}' in the body", proto::bounded_text(key).substr(0, 64)));
          return std::nullopt;
        }
    auto id = body ? request_id_of(*body, res) : std::nullopt;
    if (!id)
      return std::nullopt;
    return request{std::move(*who), std::move(*body), std::move(*id)};
  }

  // Hands the order to the execution core and writes its answer: 200 with the action, or the
  // core's error (4xx), or 504 when no answer came in time.
  void order(core::admin_order o, httplib::Response& res) {
    caf::scoped_actor self{sys_};
    std::optional<std::string> answer;
    std::string failure;
    self->request(job_queue_, answer_timeout, actors::admin_atom::value, std::move(o))
        .receive([&](const std::string& a) { answer = a; }, [&](caf::error& e) { failure = sys_.render(e); });
    if (!answer)
      return reply_error(res, 504, "unknown",
                         "no answer from the coordinator's core in time (" + failure +
                             "): the action may or may not be done; resend it with the same request_id");
    auto a = json::parse(*answer, nullptr, false);
    if (a.is_object() && a.value("command", "") == proto::cmd::error) {
      const auto code = a.value("code", std::string(errc::internal));
      const int status = code == errc::forbidden ? 403 : code == errc::internal ? 503 : code == errc::duplicate_request ? 409 : 400;
      return reply_error(res, status, code, a.value("reason", ""));
    }
    res.set_content(a.dump(), "application/json");
  }

private:
  http_options options_;
  caf::actor_system& sys_;
  caf::actor job_queue_;
};

core::admin_action action(core::admin_action::kind what, const std::string& who, const std::string& request_id,
                          std::string target = {}, std::int64_t value = 0) {
  core::admin_action a;
  a.what = what;
  a.who = who;
  a.ref = "admin:" + request_id;
  a.target = std::move(target);
  a.value = value;
  a.at_us = actors::now_us();
  return a;
}

} // namespace

void serve_admin_actions(httplib::Server& http, const http_options& o, caf::actor_system& sys, caf::actor job_queue) {
  auto act = std::make_shared<actions>(o, sys, std::move(job_queue));
  http.set_payload_max_length(64 * 1024);

  http.Post(R"(/api/nodes/([0-9a-f]{64})/(drain|undrain|ban|unban))",
            [act](const httplib::Request& req, httplib::Response& res) {
              if (auto r = act->begin(req, res, {}))
                act->order({{}, action(*core::parse_action(req.matches[2].str()), r->who, r->id, req.matches[1].str()), {}},
                           res);
            });

  http.Post("/api/settings", [act](const httplib::Request& req, httplib::Response& res) {
    auto r = act->begin(req, res, {"fee_bps", "sample_rate"});
    if (!r)
      return;
    const auto fee = r->body.find("fee_bps");
    const auto rate = r->body.find("sample_rate");
    if (fee == r->body.end() && rate == r->body.end())
      return reply_error(res, 400, errc::missing_field, "give 'fee_bps' (0-10000) or 'sample_rate' (0-1), or both");
    if (fee != r->body.end() && (!fee->is_number_integer() || fee->get<std::int64_t>() < 0 || fee->get<std::int64_t>() > 10000))
      return reply_error(res, 400, errc::bad_input, "'fee_bps' must be an integer from 0 to 10000");
    if (rate != r->body.end() && (!rate->is_number() || !(rate->get<double>() >= 0.0 && rate->get<double>() <= 1.0)))
      return reply_error(res, 400, errc::bad_input, "'sample_rate' must be a number from 0 to 1");
    // Each setting is an action with a ref of its own ("/fee", "/sample_rate" when both are set);
    // the answer is the last one's, or the first failure.
    using kind = core::admin_action::kind;
    std::vector<core::admin_action> settings;
    const bool both = fee != r->body.end() && rate != r->body.end();
    if (fee != r->body.end())
      settings.push_back(action(kind::fee, r->who, r->id + (both ? "/fee" : ""), {}, fee->get<std::int64_t>()));
    if (rate != r->body.end())
      settings.push_back(action(kind::sample_rate, r->who, r->id + (both ? "/sample_rate" : ""), {},
                                std::llround(rate->get<double>() * 1e6)));
    for (auto& a : settings) {
      act->order({{}, std::move(a), {}}, res);
      if (res.status >= 300)
        return;
    }
  });

  http.Post("/api/deposits", [act](const httplib::Request& req, httplib::Response& res) {
    auto r = act->begin(req, res, {"to", "account", "amount"});
    if (!r)
      return;
    // The same rules as a DEPOSIT on the client port (proto::parse_deposit): its request_id is
    // required there.
    proto::message m;
    m.command = proto::cmd::deposit;
    m.header = r->body;
    auto d = proto::parse_deposit(m);
    if (!d)
      return reply_error(res, 400, d.err().code, d.err().reason);
    auto a = action(core::admin_action::kind::deposit, r->who, "deposit:" + d->request_id, {}, d->amount);
    act->order({{}, std::move(a), d.value()}, res);
  });
}

} // namespace haca::app
