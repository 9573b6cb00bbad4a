// `haca admin ...`: the operator's command line over the coordinator's admin API (its HTTP
// port, app/admin_http.cpp and app/admin_actions.cpp). Tables for people, `--json` (one JSON
// object per line) for scripts. Actions need an admin token.
#include <iostream>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "app/common.hpp"

namespace haca::app {
namespace {

using json = nlohmann::json;

struct admin_cli {
  std::string url = "http://127.0.0.1:7702";
  std::string token;
  bool as_json = false;
  int limit = 50;
};

// One GET (or, with a body, a POST): the parsed body, or the API's error said plainly (exit
// code 1).
std::optional<json> fetch(const admin_cli& o, const std::string& path, const std::optional<json>& post = std::nullopt) {
  httplib::Client http(o.url);
  http.set_connection_timeout(5);
  http.set_read_timeout(30);
  if (!o.token.empty())
    http.set_bearer_token_auth(o.token);
  auto res = post ? http.Post(path, post->dump(), "application/json") : http.Get(path);
  if (!res) {
    std::cerr << fmt::format("error: no answer from {} ({}); is the coordinator running with --http-port?\n", o.url,
                             httplib::to_string(res.error()));
    return std::nullopt;
  }
  json body = json::parse(res->body, nullptr, false);
  if (res->status != 200) {
    const auto& e = body.is_object() && body.contains("error") ? body["error"] : json::object();
    std::cerr << fmt::format("error: HTTP {} {}: {}\n", res->status, e.value("code", std::string("?")),
                             e.value("reason", res->body.substr(0, 200)));
    return std::nullopt;
  }
  if (body.is_discarded()) {
    std::cerr << "error: the answer is not JSON\n";
    return std::nullopt;
  }
  return body;
}

std::string cell(const json& v) {
  if (v.is_null())
    return "-";
  if (v.is_string())
    return v.get<std::string>();
  if (v.is_array())
    return std::to_string(v.size());
  return v.dump();
}

// Up to o.limit items of a list, page after page; printed as a table of `columns` or as JSON.
int list(const admin_cli& o, const std::string& path, const std::vector<std::pair<std::string, int>>& columns) {
  std::vector<json> items;
  std::string after;
  while (static_cast<int>(items.size()) < o.limit) {
    const auto sep = path.find('?') == std::string::npos ? "?" : "&";
    auto page = fetch(o, fmt::format("{}{}limit={}&after={}", path, sep,
                                     std::min(o.limit - static_cast<int>(items.size()), 500), after));
    if (!page)
      return 1;
    for (const auto& item : (*page)["items"])
      items.push_back(item);
    if ((*page)["next"].is_null())
      break;
    after = (*page)["next"].get<std::string>();
  }
  if (o.as_json) {
    for (const auto& item : items)
      std::cout << item.dump() << "\n";
    return 0;
  }
  for (const auto& [name, width] : columns)
    std::cout << fmt::format("{:<{}} ", name, width);
  std::cout << "\n";
  for (const auto& item : items) {
    for (const auto& [name, width] : columns) {
      auto text = cell(item.value(name, json()));
      if (static_cast<int>(text.size()) > width)
        text = text.substr(0, static_cast<std::size_t>(width - 2)) + "..";
      std::cout << fmt::format("{:<{}} ", text, width);
    }
    std::cout << "\n";
  }
  std::cerr << fmt::format("{} rows\n", items.size());
  return 0;
}

int show_job(const admin_cli& o, std::int64_t id) {
  auto j = fetch(o, fmt::format("/api/jobs/{}", id));
  if (!j)
    return 1;
  if (o.as_json) {
    std::cout << j->dump() << "\n";
    return 0;
  }
  std::cout << fmt::format("job {}  {}  client {}  request {}\nprovider {}  price {} (max {})  tier {}\n",
                           (*j)["id"].get<std::int64_t>(), cell((*j)["state"]), cell((*j)["client"]),
                           cell((*j)["request_id"]), cell((*j)["provider"]), cell((*j)["price"]),
                           cell((*j)["max_price"]), cell((*j)["tier"]));
  std::cout << "timeline:\n";
  for (const auto& e : (*j)["timeline"])
    std::cout << fmt::format("  {:>3} {:<10} attempt {}  {}  {}\n", cell(e["seq"]), cell(e["state"]), cell(e["attempt"]),
                             cell(e["at"]), cell(e["detail"]));
  for (const auto& r : (*j)["receipts"])
    std::cout << fmt::format("receipt (attempt {}): {}  verdict {}  block {}\n", cell(r["attempt"]),
                             cell(r["receipt_hash"]), cell(r["verdict"]), cell(r["block"]));
  for (const auto& d : (*j)["disputes"])
    std::cout << fmt::format("ruling: the {} lost at layer {}: {}\n", cell(d["loser"]), cell(d["layer"]),
                             cell(d["detail"]));
  for (const auto& p : (*j)["postings"])
    std::cout << fmt::format("posting: {:>12} {}  ({})\n", cell(p["amount"]), cell(p["account"]), cell(p["memo"]));
  return 0;
}

// An action: POSTed and its answer printed. When no answer came the action may or may not be
// done: the request id is printed, and the same command with it repeats nothing (drain, ban and
// the settings are the same whatever the repeats; a deposit takes --request-id).
int act(const admin_cli& o, const std::string& path, json body) {
  if (!body.contains("request_id"))
    body["request_id"] = "cli-" + random_hex(12);
  auto answer = fetch(o, path, body);
  if (!answer) {
    std::cerr << fmt::format("request id: {}\n", body["request_id"].get<std::string>());
    return 1;
  }
  if (o.as_json)
    std::cout << answer->dump() << "\n";
  else if (answer->value("command", "") == "DEPOSITED")
    std::cout << fmt::format("deposited {} to {}: balance {}{}\n", cell((*answer)["amount"]), cell((*answer)["account"]),
                             cell((*answer)["balance"]), answer->value("repeated", false) ? " (repeated: nothing new)" : "");
  else
    std::cout << fmt::format("done: {} {} {} (by {}, ref {})\n", cell((*answer)["action"]), cell((*answer)["target"]),
                             cell((*answer)["value"]), cell((*answer)["who"]), cell((*answer)["ref"]));
  return 0;
}

} // namespace

void add_admin_command(CLI::App& app) {
  auto o = std::make_shared<admin_cli>();
  auto* admin = app.add_subcommand("admin", "Look at the market through the coordinator's admin API (its --http-port)");
  admin->require_subcommand(1);
  admin->add_option("--url", o->url, "the coordinator's HTTP port")->capture_default_str();
  admin->add_option("--token", o->token, "bearer token (read-token or admin-token; best kept in the config file)");
  admin->add_flag("--json", o->as_json, "one JSON object per line instead of a table");
  admin->add_option("--limit", o->limit, "rows at most")->check(CLI::Range(1, 100000))->capture_default_str();
  const auto run = [](int rc) {
    if (rc != 0)
      throw CLI::RuntimeError(rc);
  };
  admin->add_subcommand("providers", "Providers and verifiers: role, device, price, stake, balance, last seen")
      ->callback([o, run] {
        run(list(*o, "/api/providers",
                 {{"key", 16}, {"role", 9}, {"name", 16}, {"device", 6}, {"price", 7}, {"stake", 10}, {"balance", 10},
                  {"last_seen", 27}}));
      });
  auto filter = std::make_shared<std::array<std::string, 5>>();
  auto* jobs = admin->add_subcommand("jobs", "Jobs, oldest first, filtered");
  jobs->add_option("--state", (*filter)[0], "QUEUED, ASSIGNED, EXECUTED, VERIFIED, UNSAMPLED, DISPUTED, SETTLED, ...");
  jobs->add_option("--client", (*filter)[1], "a client account");
  jobs->add_option("--provider", (*filter)[2], "a provider key");
  jobs->add_option("--since", (*filter)[3], "submitted at or after this UTC time (2026-12-06T03:21:56Z)");
  jobs->add_option("--until", (*filter)[4], "submitted before this UTC time");
  jobs->callback([o, filter, run] {
    const auto q = [&](int i) { return httplib::detail::encode_query_param((*filter)[static_cast<std::size_t>(i)]); };
    run(list(*o, fmt::format("/api/jobs?state={}&client={}&provider={}&since={}&until={}", q(0), q(1), q(2), q(3), q(4)),
             {{"id", 8}, {"state", 10}, {"attempt", 7}, {"client", 16}, {"provider", 16}, {"price", 7},
              {"submitted_at", 27}}));
  });
  auto id = std::make_shared<std::int64_t>(0);
  auto* job = admin->add_subcommand("job", "One job: its timeline, receipt, verdict, dispute evidence and postings");
  job->add_option("id", *id, "job id")->required()->check(CLI::Range(std::int64_t{1}, std::int64_t{999999999999999999}));
  job->callback([o, id, run] { run(show_job(*o, *id)); });
  admin->add_subcommand("disputes", "Referee rulings")->callback([o, run] {
    run(list(*o, "/api/disputes", {{"job_id", 8}, {"loser", 9}, {"layer", 5}, {"provider", 16}, {"verifier", 16},
                                   {"ruled_at", 27}}));
  });
  admin->add_subcommand("blocks", "Settlement blocks, newest first")->callback([o, run] {
    run(list(*o, "/api/blocks", {{"height", 7}, {"receipts", 8}, {"total_amount", 12}, {"hash", 18}, {"prev_hash", 18}}));
  });
  auto prefix = std::make_shared<std::string>();
  auto* accounts = admin->add_subcommand("accounts", "Ledger accounts and balances");
  accounts->add_option("--prefix", *prefix, "client:, provider:, stake:, protocol:fees, mint");
  accounts->callback([o, prefix, run] {
    run(list(*o, "/api/accounts?prefix=" + httplib::detail::encode_query_param(*prefix), {{"account", 74}, {"balance", 14}}));
  });
  auto of_account = std::make_shared<std::string>();
  auto* postings = admin->add_subcommand("postings", "Ledger postings, newest first");
  postings->add_option("--account", *of_account, "one account (client:KEY, provider:KEY, stake:KEY, protocol:fees, mint)");
  postings->callback([o, of_account, run] {
    run(list(*o, "/api/postings?account=" + httplib::detail::encode_query_param(*of_account),
             {{"id", 8}, {"block", 7}, {"job_id", 8}, {"account", 30}, {"amount", 12}, {"memo", 20}, {"at", 27}}));
  });
  admin->add_subcommand("actions", "The operators' actions, newest first: who did what")->callback([o, run] {
    run(list(*o, "/api/actions",
             {{"id", 6}, {"who", 12}, {"action", 11}, {"target", 20}, {"value", 12}, {"taken_at", 27}}));
  });

  // Actions (an admin token).
  struct node_action {
    std::string key;
    bool undo = false;
  };
  for (const auto& [name, undo_name, help] :
       {std::tuple{"drain", "undrain", "Stop giving a node new work (it finishes what it holds); --undo gives it work again"},
        std::tuple{"ban", "unban", "Disconnect a node and refuse its key from now on; --undo lets it join again"}}) {
    auto n = std::make_shared<node_action>();
    auto* cmd = admin->add_subcommand(name, help);
    cmd->add_option("key", n->key, "the node's public key (64 hex characters)")->required();
    cmd->add_flag("--undo", n->undo, std::string("") + undo_name + " instead");
    cmd->callback([o, n, run, name = std::string(name), undo_name = std::string(undo_name)] {
      run(act(*o, fmt::format("/api/nodes/{}/{}", httplib::detail::encode_query_param(n->key), n->undo ? undo_name : name),
              json::object()));
    });
  }
  struct settings {
    std::optional<int> fee_bps;
    std::optional<double> sample_rate;
  };
  auto set = std::make_shared<settings>();
  auto* fees = admin->add_subcommand("fees", "Set the protocol fee and/or the sample rate (from the next block/receipt on)");
  fees->add_option("--fee-bps", set->fee_bps, "protocol fee, basis points of each job's price (0-10000)");
  fees->add_option("--sample-rate", set->sample_rate, "share of 'sampled' jobs re-executed by a verifier (0-1)");
  fees->callback([o, set, run] {
    json body = json::object();
    if (set->fee_bps)
      body["fee_bps"] = *set->fee_bps;
    if (set->sample_rate)
      body["sample_rate"] = *set->sample_rate;
    if (body.empty())
      throw CLI::ValidationError("fees", "give --fee-bps and/or --sample-rate");
    run(act(*o, "/api/settings", body));
  });
  struct deposit_args {
    std::string account, request_id;
    std::int64_t amount = 0;
    bool node = false;
  };
  auto dep = std::make_shared<deposit_args>();
  auto* deposit = admin->add_subcommand("deposit", "Credit an account (a client's CURVE key, or with --node a node's key)");
  deposit->add_option("account", dep->account, "the account's key (64 hex characters)")->required();
  deposit->add_option("amount", dep->amount, "micro-units")->required();
  deposit->add_flag("--node", dep->node, "credit the node account provider:<key> (its stake comes from it)");
  deposit->add_option("--request-id", dep->request_id, "makes it idempotent: the same id is never credited twice "
                                                       "(default: a fresh one)");
  deposit->callback([o, dep, run] {
    json body{{"account", dep->account}, {"amount", dep->amount}, {"to", dep->node ? "node" : "client"}};
    if (!dep->request_id.empty())
      body["request_id"] = dep->request_id;
    run(act(*o, "/api/deposits", body));
  });
}

} // namespace haca::app
