// `haca submit` and `haca status`: the client side.
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include <fmt/chrono.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "app/common.hpp"
#include "app/workload.hpp"
#include "net/client.hpp"
#include "train/idx.hpp"
#include "verify/hash.hpp"
#include "verify/signing.hpp"

namespace haca::app {
namespace {

struct submit_cli {
  client_login login;
  std::string model;
  std::string input;
  int input_dim = 0;
  std::size_t random = 0;
  std::string images;       // gzip'd IDX images: one job per image
  std::string labels;       // gzip'd IDX labels, to count correct predictions
  std::size_t count = 0;    // images to send (0 = all)
  std::uint64_t seed = 1;
  std::string request_prefix;
  std::string tier = "sampled";
  std::int64_t max_price = 100;
  std::int64_t deadline_ms = 0;
  std::size_t window = 1000;
  bool json = false;
};

// --model takes a hash or a model file (whose hash and input size are then known).
int resolve_model(submit_cli& o) {
  if (verify::is_hash_hex(o.model))
    return 0;
  auto m = kernels::load_model_file(o.model);
  if (!m) {
    std::cerr << fmt::format("error: --model '{}' is neither a model hash nor a model file: {}\n", o.model,
                             m.err().reason);
    return 2;
  }
  o.model = m->hash;
  if (o.input_dim == 0)
    o.input_dim = m->input_dim();
  return 0;
}

int run_submit(submit_cli o) {
  if (int rc = resolve_model(o))
    return rc;
  auto credentials = load_credentials(o.login);
  if (!credentials) {
    std::cerr << fmt::format("error: {}\n", credentials.err().reason);
    return 2;
  }
  workload_options w;
  w.endpoint = o.login.connect;
  w.credentials = credentials.value();
  std::cerr << fmt::format("account {} (the CURVE key of {})\n", w.credentials.account(), o.login.key);
  w.request_prefix = o.request_prefix.empty() ? fmt::format("cli-{}-", std::chrono::system_clock::now().time_since_epoch().count())
                                              : o.request_prefix;
  w.model = o.model;
  w.tier = o.tier;
  w.max_price = o.max_price;
  w.deadline_ms = o.deadline_ms;
  w.window = o.window;
  if (!o.input.empty()) {
    std::ifstream f{o.input, std::ios::binary};
    if (!f) {
      std::cerr << fmt::format("error: cannot read --input '{}'\n", o.input);
      return 2;
    }
    std::stringstream ss;
    ss << f.rdbuf();
    auto bytes = ss.str();
    if (o.input_dim <= 0 || bytes.empty() || bytes.size() % static_cast<std::size_t>(o.input_dim) != 0) {
      std::cerr << fmt::format("error: --input has {} bytes, not a whole number of rows of --input-dim {} int8 values\n",
                               bytes.size(), o.input_dim);
      return 2;
    }
    kernels::tensor t{kernels::dtype::i8, {static_cast<std::int64_t>(bytes.size()) / o.input_dim, o.input_dim}, bytes};
    w.inputs.push_back(std::move(t));
  } else if (!o.images.empty()) {
    auto imgs = train::read_idx_images(o.images);
    if (!imgs) {
      std::cerr << fmt::format("error: --images: {}\n", imgs.err().reason);
      return 2;
    }
    auto pixels_per_image = imgs->rows * imgs->cols;
    if (o.input_dim > 0 && pixels_per_image != o.input_dim) {
      std::cerr << fmt::format("error: --images holds {}x{} images but the model takes {} values per row\n", imgs->rows,
                               imgs->cols, o.input_dim);
      return 2;
    }
    auto n = o.count == 0 ? static_cast<std::size_t>(imgs->count) : std::min<std::size_t>(o.count, imgs->count);
    w.inputs = image_inputs(imgs->pixels, imgs->count, pixels_per_image, n);
  } else if (o.random > 0) {
    if (o.input_dim <= 0) {
      std::cerr << "error: --random needs --input-dim (or --model given as a file)\n";
      return 2;
    }
    w.inputs = random_inputs(o.random, o.input_dim, o.seed);
  } else {
    std::cerr << "error: give --input FILE, --images FILE or --random N\n";
    return 2;
  }
  auto rep = run_workload(w);
  for (const auto& j : rep.jobs) {
    if (o.json) {
      nlohmann::json line{{"request_id", j.request_id}, {"job_id", j.job_id}};
      if (j.done) {
        line["classes"] = j.classes;
        line["receipt"] = proto::receipt_json(j.receipt);
        line["receipt_valid"] = j.receipt_valid;
        line["latency_ms"] = static_cast<double>(j.latency_us) / 1000.0;
      } else {
        line["error"] = {{"code", j.error_code.empty() ? "timeout" : j.error_code}, {"reason", j.error_reason}};
      }
      std::cout << line.dump() << "\n";
    } else if (j.done) {
      std::cout << fmt::format("{}: job {} -> class {}  receipt {} (trace root {}..)  {:.2f} ms\n", j.request_id,
                               j.job_id, fmt::join(j.classes, ","), j.receipt_valid ? "valid" : "INVALID",
                               j.receipt.trace_root.substr(0, 12), static_cast<double>(j.latency_us) / 1000.0);
    } else {
      std::cout << fmt::format("{}: error {}: {}\n", j.request_id, j.error_code.empty() ? "timeout" : j.error_code,
                               j.error_reason.empty() ? "no answer before the timeout" : j.error_reason);
    }
  }
  if (!o.json)
    std::cerr << fmt::format("{} results, {} errors, {} invalid receipts in {:.2f} s{}\n", rep.results, rep.errors,
                             rep.invalid_receipts, rep.seconds,
                             rep.reconnects || rep.retries
                                 ? fmt::format(" ({} reconnects, {} requests resent, {} refusals retried)",
                                               rep.reconnects, rep.resent, rep.retries)
                                 : "");
  if (!o.labels.empty()) {
    auto labels = train::read_idx_labels(o.labels);
    if (!labels) {
      std::cerr << fmt::format("error: --labels: {}\n", labels.err().reason);
      return 2;
    }
    std::size_t correct = 0, judged = 0;
    for (std::size_t i = 0; i < rep.jobs.size() && i < labels->size(); ++i)
      if (rep.jobs[i].done && rep.jobs[i].classes.size() == 1) {
        ++judged;
        correct += rep.jobs[i].classes[0] == (*labels)[i] ? 1 : 0;
      }
    std::cerr << fmt::format("{} of {} predictions match the labels ({:.1f}%)\n", correct, judged,
                             judged ? 100.0 * static_cast<double>(correct) / static_cast<double>(judged) : 0.0);
  }
  return rep.errors == 0 && rep.invalid_receipts == 0 && rep.duplicate_results == 0 && !rep.timed_out ? 0 : 1;
}

int run_status(const client_login& login, std::int64_t job_id, bool json) {
  auto msg = ask_coordinator(login, proto::make_job_query({job_id}));
  if (!msg) {
    std::cerr << fmt::format("error {}: {}\n", msg.err().code, msg.err().reason);
    return 1;
  }
  if (json) {
    std::cout << msg->header.dump(2) << "\n";
    return 0;
  }
  auto s = proto::parse_status_reply(msg.value());
  if (!s) {
    std::cerr << "error: " << s.err().reason << "\n";
    return 1;
  }
  std::cout << fmt::format("job {}: {} (attempt {})\n", s->job_id, s->state, s->attempt);
  for (const auto& e : s->events) {
    auto t = std::chrono::system_clock::time_point(std::chrono::microseconds(e.at_us));
    std::cout << fmt::format("  {:%H:%M:%S}  {:<10} {}\n", fmt::localtime(std::chrono::system_clock::to_time_t(t)),
                             e.state, e.detail);
  }
  if (s->result) {
    const auto& r = *s->result;
    const bool valid = verify::verify_receipt(r.receipt) && verify::sha256_hex(r.output.data) == r.receipt.output_hash;
    std::cout << fmt::format("  result: classes [{}], output {} bytes, receipt {} (provider {}.., trace root {}..)\n",
                             fmt::join(r.classes, ","), r.output.data.size(), valid ? "valid" : "INVALID",
                             r.receipt.provider_key.substr(0, 12), r.receipt.trace_root.substr(0, 12));
  }
  return 0;
}

// DEPOSIT over the client port, as the admin key: the coordinator obeys it from that key alone.
int run_deposit(const client_login& login, const std::string& account, std::int64_t amount, std::string request_id,
                bool node) {
  if (request_id.empty())
    request_id = fmt::format("deposit-{}", std::chrono::system_clock::now().time_since_epoch().count());
  auto msg = ask_coordinator(login, proto::make_deposit({request_id, account, amount, node ? "node" : "client"}));
  if (!msg) {
    std::cerr << fmt::format("error {}: {}\n", msg.err().code, msg.err().reason);
    return 1;
  }
  auto d = proto::parse_deposited(msg.value());
  if (!d) {
    std::cerr << fmt::format("error: unexpected reply {}: {}\n", msg->command, d.err().reason);
    return 1;
  }
  std::cout << fmt::format("{} {} micro-units to {} {} (request {}); balance {}\n",
                           d->repeated ? "already deposited" : "deposited", d->amount, d->to, d->account,
                           d->request_id, d->balance);
  return 0;
}

} // namespace

void add_client_login_options(CLI::App& cmd, client_login& login) {
  cmd.add_option("--connect", login.connect, "the coordinator's client endpoint")->capture_default_str();
  cmd.add_option("--key", login.key, "this client's Ed25519 key file (created if absent): its CURVE key is the account")
      ->capture_default_str();
  cmd.add_option("--coordinator-key", login.coordinator_key,
                 "the coordinator's public key (hex) or a file holding it (it writes <its --key>.pub)")
      ->capture_default_str();
}

result<std::string> read_public_key(const std::string& hex_or_file, const std::string& flag) {
  std::string key = hex_or_file;
  if (!verify::is_hash_hex(key)) {
    std::ifstream in(hex_or_file);
    std::getline(in, key);
    if (!in || !verify::is_hash_hex(key))
      return make_error(errc::bad_input, fmt::format("{} {}: neither a public key (64 lowercase hex characters) nor "
                                                     "a file holding one (the coordinator writes its own to <its "
                                                     "--key>.pub and logs it at start)",
                                                     flag, hex_or_file));
  }
  // 64 hex characters are not always a key: an Ed25519 public key is a curve point (and has a
  // Curve25519 form, which CurveZMQ uses).
  if (verify::curve_public_hex(key).empty())
    return make_error(errc::bad_input, fmt::format("{} {}: 64 hex characters, but not an Ed25519 public key", flag,
                                                   key));
  return key;
}

result<net::client_credentials> load_credentials(const client_login& login) {
  auto coordinator_key = read_public_key(login.coordinator_key, "--coordinator-key");
  if (!coordinator_key)
    return coordinator_key.err();
  auto key = verify::load_or_create_key(login.key);
  if (!key)
    return error{key.err().code, "--key " + login.key + ": " + key.err().reason};
  return net::client_credentials{key.value(), coordinator_key.value()};
}

result<proto::message> ask_coordinator(const client_login& login, const proto::message& request) {
  auto credentials = load_credentials(login);
  if (!credentials)
    return credentials.err();
  return ask_coordinator(login.connect, credentials.value(), request);
}

result<proto::message> ask_coordinator(const std::string& endpoint, const net::client_credentials& credentials,
                                       const proto::message& request) {
  net::client conn{endpoint, credentials};
  conn.send(request);
  auto msg = conn.receive(std::chrono::seconds(10));
  if (!msg)
    return make_error(errc::unavailable,
                      fmt::format("no answer from {} within 10 s (is the coordinator running, and is {} its key?)",
                                  endpoint, credentials.coordinator_key.substr(0, 12)));
  if (!*msg)
    return msg->err();
  if (msg->value().command == proto::cmd::error) {
    auto e = proto::parse_error(msg->value());
    if (!e)
      return e.err();
    return error{e->code, e->reason};
  }
  return std::move(msg->value());
}

void add_client_commands(CLI::App& app) {
  auto o = std::make_shared<submit_cli>();
  auto* sub = app.add_subcommand("submit", "Submit inference jobs and print results with their signed receipts");
  add_client_login_options(*sub, o->login);
  sub->add_option("--model", o->model, "model hash, or a model file (then its hash and input size are used)")
      ->required();
  sub->add_option("--input", o->input, "raw int8 input file: rows x input-dim bytes, one job");
  sub->add_option("--input-dim", o->input_dim, "values per input row (known from --model when it is a file)");
  sub->add_option("--random", o->random, "submit N jobs with random inputs instead of --input");
  sub->add_option("--images", o->images,
                  "gzip'd IDX image file (e.g. Fashion-MNIST t10k): one job per image, pixels quantized with "
                  "q = (p*127+127)/255");
  sub->add_option("--labels", o->labels, "gzip'd IDX label file matching --images: report how many predictions match");
  sub->add_option("--count", o->count, "with --images: the first N images only (0 = all)")->capture_default_str();
  sub->add_option("--seed", o->seed, "seed for --random")->capture_default_str();
  sub->add_option("--request-prefix", o->request_prefix, "request ids are <prefix><n> (default: unique per run)");
  sub->add_option("--tier", o->tier, "verification tier")->check(CLI::IsMember({"none", "sampled", "full"}))
      ->capture_default_str();
  sub->add_option("--max-price", o->max_price, "the most this job may cost, micro-units")->capture_default_str();
  sub->add_option("--deadline-ms", o->deadline_ms, "expire the job if not run within this many ms (0 = default)")
      ->capture_default_str();
  sub->add_option("--window", o->window, "unanswered SUBMITs in flight at most")->capture_default_str();
  sub->add_flag("--json", o->json, "print one JSON object per job");
  sub->callback([o] {
    if (int rc = run_submit(*o))
      throw CLI::RuntimeError(rc);
  });

  auto login = std::make_shared<client_login>();
  auto job_id = std::make_shared<std::int64_t>(0);
  auto json = std::make_shared<bool>(false);
  auto* st = app.add_subcommand("status", "Show a job's state and every transition it went through (your own jobs only)");
  st->add_option("job", *job_id, "job id (from ACK or 'haca submit')")->required();
  add_client_login_options(*st, *login);
  st->add_flag("--json", *json, "print the raw STATUS header");
  st->callback([=] {
    if (int rc = run_status(*login, *job_id, *json))
      throw CLI::RuntimeError(rc);
  });

  auto admin = std::make_shared<client_login>();
  admin->key = "haca-keys/coordinator.key";
  auto account = std::make_shared<std::string>();
  auto amount = std::make_shared<std::int64_t>(0);
  auto request_id = std::make_shared<std::string>();
  auto node = std::make_shared<bool>(false);
  auto* dep = app.add_subcommand("deposit", "Credit a client or node account (needs the coordinator's admin key)");
  dep->add_option("--account", *account, "the client account: its CURVE public key, 64 hex characters ('haca submit' "
                                         "prints it); with --node, the node's public key (its key file's .pub)")
      ->required();
  dep->add_flag("--node", *node, "credit the node account provider:<key>, from which a provider's or verifier's "
                                 "stake is held when it joins");
  dep->add_option("--amount", *amount, "micro-units")->required()->check(CLI::Range(std::int64_t{1}, proto::max_deposit));
  dep->add_option("--request-id", *request_id, "makes a resend safe: the same id is credited once (default: unique)");
  add_client_login_options(*dep, *admin);
  dep->callback([=] {
    if (int rc = run_deposit(*admin, *account, *amount, *request_id, *node))
      throw CLI::RuntimeError(rc);
  });
}

} // namespace haca::app
