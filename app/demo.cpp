// `haca demo`: a whole local network (coordinator, two providers, one verifier) as child
// processes on loopback, a pipelined workload, then a summary checked against Postgres. With
// --serve the coordinator also serves the dashboard (web/) and the admin API, and the network
// keeps running after the summary until SIGINT/SIGTERM.
#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

#include <fmt/format.h>

#include "app/common.hpp"
#include "app/process.hpp"
#include "app/workload.hpp"
#include "db/audit.hpp"
#include "train/idx.hpp"
#include "verify/signing.hpp"

namespace haca::app {
namespace {

struct demo_options {
  std::size_t jobs = 1000;
  std::string db = "postgresql:///haca";
  std::string work_dir = "haca-demo";
  int client_port = 7700;
  int node_port = 7701;
  int providers = 2;
  std::int64_t min_stake = 100000; // each node's stake, deposited to its node account by the demo
  double sample_rate = 1.0;
  std::size_t window = 1000;
  int settle_timeout_s = 120;
  std::string model = "models/fmnist-mlp.safetensors";
  std::string data = "/usr/share/datasets/fashion-mnist";
  bool serve = false;
  int http_port = 7702;
  std::string web_dir; // "" = the coordinator's default
};

// The coordinator's tokens go into a config file only this user can read, not onto its
// command line (which `ps` shows to everyone).
std::string write_token_config(const std::string& path, const std::string& read_token, const std::string& admin_token) {
  std::ofstream f{path, std::ios::trunc};
  ::chmod(path.c_str(), 0600);
  f << fmt::format("# written by haca demo --serve; new tokens each run\n[coordinator]\nread-token = \"{}\"\n"
                   "admin-token = [\"demo:{}\"]\n",
                   read_token, admin_token);
  if (!f.flush())
    throw std::runtime_error("cannot write " + path);
  return path;
}

class progress_bar {
public:
  progress_bar(std::string label, std::size_t total) : label_(std::move(label)), total_(total) {}
  void update(std::size_t done) {
    auto now = std::chrono::steady_clock::now();
    if (done < total_ && now - last_ < std::chrono::milliseconds(100))
      return;
    last_ = now;
    double secs = std::chrono::duration<double>(now - start_).count();
    std::size_t width = 30, filled = total_ ? done * width / total_ : width;
    std::cerr << fmt::format("\r{:<9} [{}{}] {}/{}  {:.0f}/s ", label_, std::string(filled, '#'),
                             std::string(width - filled, ' '), done, total_, secs > 0 ? done / secs : 0.0)
              << std::flush;
    if (done >= total_)
      std::cerr << "\n";
  }

private:
  std::string label_;
  std::size_t total_;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now(), last_{};
};

int run_demo(const demo_options& o) {
  install_stop_handlers();
  namespace fs = std::filesystem;
  for (auto sub : {"models", "keys", "logs"})
    fs::create_directories(fs::path(o.work_dir) / sub);
  auto models_dir = (fs::path(o.work_dir) / "models").string();
  // The trained Fashion-MNIST model when it is here (run from the repo), else a generated one.
  auto model_file = models_dir + "/demo.safetensors";
  if (fs::exists(o.model)) {
    fs::copy_file(o.model, model_file, fs::copy_options::overwrite_existing);
  } else {
    std::cerr << fmt::format("note: {} not found; using a generated MLP with random inputs\n", o.model);
    auto bytes = kernels::save_model(kernels::generate_mlp(1, {784, 128, 10}, "demo-mlp"));
    std::ofstream f{model_file, std::ios::binary | std::ios::trunc};
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  auto model = kernels::load_model_file(model_file);
  if (!model) {
    std::cerr << "error: " << model.err().reason << "\n";
    return 1;
  }

  auto exe = self_executable();
  auto log = [&](const std::string& name) { return (fs::path(o.work_dir) / "logs" / (name + ".log")).string(); };
  auto key = [&](const std::string& name) { return (fs::path(o.work_dir) / "keys" / (name + ".key")).string(); };
  auto node_endpoint = fmt::format("tcp://127.0.0.1:{}", o.node_port);
  std::vector<child_process> children;
  verify::key_pair coordinator_key; // also the admin key: it makes the demo account's deposit
  std::string read_token;           // --serve: the dashboard's
  auto stop_all = [&] {
    for (auto it = children.rbegin(); it != children.rend(); ++it) // nodes first, then the coordinator
      stop_process(*it);
  };
  try {
    // Made here so the nodes know the coordinator's public key (their CurveZMQ server key).
    auto loaded = verify::load_or_create_key(key("coordinator"));
    if (!loaded)
      throw std::runtime_error("coordinator key: " + loaded.err().reason);
    coordinator_key = loaded.value();
    std::vector<std::string> args{"coordinator", "--db", o.db, "--models", models_dir, "--client-port",
                                  std::to_string(o.client_port), "--node-port", std::to_string(o.node_port),
                                  "--sample-rate", std::to_string(o.sample_rate), "--key", key("coordinator"),
                                  "--min-stake", std::to_string(o.min_stake)};
    if (o.serve) {
      read_token = random_hex(32);
      auto config = write_token_config((fs::path(o.work_dir) / "coordinator.toml").string(), read_token, random_hex(32));
      args.insert(args.begin(), {"--config", config});
      args.insert(args.end(), {"--http-port", std::to_string(o.http_port)});
      if (!o.web_dir.empty())
        args.insert(args.end(), {"--web-dir", o.web_dir});
    }
    children.push_back(start_process("coordinator", exe, args, log("coordinator")));
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    stop_all();
    return 1;
  }
  const auto client_endpoint = fmt::format("tcp://127.0.0.1:{}", o.client_port);
  const net::client_credentials admin{coordinator_key, coordinator_key.public_key_hex};
  // DEPOSIT by the admin key (the coordinator's own, the default): what a real operator does.
  auto deposit = [&](const std::string& to, const std::string& account, std::int64_t amount) {
    auto r = ask_coordinator(client_endpoint, admin,
                             proto::make_deposit({"demo-" + to + "-" + account.substr(0, 16), account, amount, to}));
    if (!r)
      throw std::runtime_error(fmt::format("the deposit to {} account {}.. failed: {} {}", to, account.substr(0, 16),
                                           r.err().code, r.err().reason));
  };
  std::vector<std::pair<std::string, std::string>> nodes; // (name, role)
  for (int i = 1; i <= o.providers; ++i)
    nodes.emplace_back(fmt::format("provider-{}", i), "provider");
  nodes.emplace_back("verifier-1", "verifier");
  try {
    // Each node's key is made here, so its stake can be deposited before it joins: with
    // --min-stake, a node whose account cannot pay for the stake is refused.
    for (const auto& [name, role] : nodes) {
      auto node_key = verify::load_or_create_key(key(name));
      if (!node_key)
        throw std::runtime_error(name + " key: " + node_key.err().reason);
      if (o.min_stake > 0)
        deposit("node", node_key->public_key_hex, o.min_stake);
    }
    int i = 0;
    for (const auto& [name, role] : nodes) {
      std::vector<std::string> args{role, "--connect", node_endpoint, "--coordinator-key",
                                    coordinator_key.public_key_hex, "--models", models_dir, "--name", name, "--key",
                                    key(name)};
      if (role == "provider")
        args.insert(args.end(), {"--price", std::to_string(8 + 2 * ++i)});
      children.push_back(start_process(name, exe, args, log(name)));
    }
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    stop_all();
    return 1;
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  for (auto& c : children)
    if (!running(c)) {
      std::cerr << fmt::format("error: {} exited at start; its log ({}):\n{}\n", c.name, c.log_path,
                               tail_file(c.log_path));
      stop_all();
      return 1;
    }
  std::cerr << fmt::format("haca demo: coordinator on :{} / :{}, {} providers, 1 verifier, each with {} micro-units "
                           "at stake; logs in {}/logs\n",
                           o.client_port, o.node_port, o.providers, o.min_stake, o.work_dir);
  // The fragment never reaches the server (nor its logs): the page reads the token from it.
  const auto dashboard = fmt::format("http://127.0.0.1:{}/#token={}", o.http_port, read_token);
  if (o.serve)
    std::cerr << fmt::format("dashboard: {}\n", dashboard);
  std::cerr << fmt::format("model '{}' {} ({} -> {}), {} jobs, sample rate {}\n", model->name, model->hash.substr(0, 16),
                           model->input_dim(), model->output_dim(), o.jobs, o.sample_rate);

  workload_options w;
  w.endpoint = client_endpoint;
  // A client account of this run (a fresh key), funded as a real one is: a DEPOSIT by the admin key.
  w.credentials = {verify::generate_key_pair(), coordinator_key.public_key_hex};
  const auto account = w.credentials.account();
  const std::int64_t funds = 100 * static_cast<std::int64_t>(o.jobs) + 1000;
  try {
    deposit("client", account, funds);
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    stop_all();
    return 1;
  }
  std::cerr << fmt::format("client account {}.. funded with {} micro-units (DEPOSIT by the admin key)\n",
                           account.substr(0, 16), funds);
  w.model = model->hash;
  w.tier = "sampled";
  w.max_price = 100;
  w.window = o.window;
  // Real test images (and their labels, to score the predictions) when the dataset is installed.
  auto test_set = train::read_fashion_mnist(o.data, "t10k");
  bool real_images = test_set.ok() && model->input_size() == test_set->images.rows * test_set->images.cols;
  w.inputs = real_images ? image_inputs(test_set->images.pixels, test_set->images.count, model->input_size(), o.jobs)
                         : random_inputs(o.jobs, model->input_dim(), 42);
  w.stop = &stop_requested();
  w.timeout_ms = 30000;
  progress_bar bar{"results", o.jobs};
  w.progress = [&](std::size_t done, std::size_t) { bar.update(done); };
  auto rep = run_workload(w);
  if (rep.stopped) {
    std::cerr << "\ninterrupted: stopping the network\n";
    stop_all();
    return 130;
  }

  // Settlement runs after the results, off the client's path: wait for it.
  progress_bar settle_bar{"settled", o.jobs};
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(o.settle_timeout_s);
  std::int64_t final_jobs = 0;
  while (!stop_requested() && std::chrono::steady_clock::now() < deadline) {
    auto n = db::count_final(o.db, account);
    if (!n) {
      std::cerr << "\nerror: " << n.err().reason << "\n";
      break;
    }
    final_jobs = n.value();
    settle_bar.update(static_cast<std::size_t>(final_jobs));
    if (final_jobs >= static_cast<std::int64_t>(rep.results + rep.errors))
      break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  auto a = db::audit(o.db, account);
  if (!a) {
    stop_all();
    std::cerr << "error: " << a.err().reason << "\n";
    return 1;
  }
  std::vector<std::int64_t> lat;
  for (const auto& j : rep.jobs)
    if (j.done)
      lat.push_back(j.latency_us);
  bool balanced = a->postings_balanced && a->chain_valid && a->receipts_valid;
  std::string predictions = "random inputs (no labels)";
  if (real_images) {
    std::size_t correct = 0;
    for (std::size_t i = 0; i < rep.jobs.size(); ++i)
      if (rep.jobs[i].done && rep.jobs[i].classes.size() == 1)
        correct += rep.jobs[i].classes[0] == test_set->labels[i % test_set->labels.size()] ? 1 : 0;
    predictions = fmt::format("{:.1f}% match the Fashion-MNIST test labels",
                              100.0 * static_cast<double>(correct) / static_cast<double>(std::max<std::size_t>(1, rep.results)));
  }
  std::cout << fmt::format(
      "\nhaca demo summary (client {})\n"
      "  jobs submitted:     {}\n"
      "  results:            {} ({} errors, {} invalid receipts, {} duplicate results)\n"
      "  throughput:         {:.0f} jobs/s\n"
      "  client latency:     p50 {:.2f} ms, p99 {:.2f} ms\n"
      "  predictions:        {}\n"
      "  verified:           {} (re-executed by a verifier; {} unsampled, {} disputed)\n"
      "  settled:            {}\n"
      "  blocks:             {} in the chain (hashes, signatures, batch roots checked: {})\n"
      "  receipts checked:   {} ({})\n"
      "  ledger balanced:    {}\n",
      account.substr(0, 16) + "..", o.jobs, rep.results, rep.errors, rep.invalid_receipts, rep.duplicate_results,
      rep.seconds > 0 ? static_cast<double>(rep.results) / rep.seconds : 0.0, percentile_ms(lat, 0.5),
      percentile_ms(lat, 0.99), predictions, a->verified, a->unsampled, a->disputed, a->settled, a->blocks,
      a->chain_valid ? "ok" : "BROKEN", a->receipts_checked, a->receipts_valid ? "all signatures valid" : "INVALID",
      balanced ? "yes" : "NO");
  if (!a->problem.empty())
    std::cout << "  problem:            " << a->problem << "\n";
  std::cout << fmt::format("  data kept in {} (tables jobs, job_events, receipts, blocks, postings, accounts)\n", o.db);
  bool ok = balanced && rep.results == o.jobs && rep.invalid_receipts == 0 && rep.duplicate_results == 0 &&
            a->settled == static_cast<std::int64_t>(o.jobs);
  if (o.serve && !stop_requested()) {
    // The summary is out and the network is idle: it stays up for the dashboard until a signal.
    std::cout << fmt::format("\nserving the dashboard until Ctrl-C: {}\n", dashboard) << std::flush;
    while (!stop_requested()) {
      for (auto& c : children)
        if (!running(c)) {
          std::cerr << fmt::format("error: {} exited; its log ({}):\n{}\n", c.name, c.log_path, tail_file(c.log_path));
          stop_all();
          return 1;
        }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    std::cerr << "stopping the network\n";
  }
  stop_all();
  return ok ? 0 : 1;
}

} // namespace

void add_demo_command(CLI::App& app) {
  auto o = std::make_shared<demo_options>();
  auto* cmd = app.add_subcommand("demo", "Run a whole local network (coordinator, providers, verifier) and a workload, "
                                         "then print a summary checked against Postgres");
  cmd->add_option("--jobs", o->jobs, "jobs to submit (pipelined)")->capture_default_str();
  cmd->add_option("--db", o->db, "PostgreSQL connection URL")->capture_default_str();
  cmd->add_option("--work-dir", o->work_dir, "where models, keys and logs go")->capture_default_str();
  cmd->add_option("--client-port", o->client_port, "coordinator client port")->capture_default_str();
  cmd->add_option("--node-port", o->node_port, "coordinator node port")->capture_default_str();
  cmd->add_option("--providers", o->providers, "provider processes")->check(CLI::Range(1, 16))->capture_default_str();
  cmd->add_option("--min-stake", o->min_stake, "micro-units each node must have at stake (deposited for it here)")
      ->check(CLI::Range(std::int64_t{0}, proto::max_deposit))
      ->capture_default_str();
  cmd->add_option("--sample-rate", o->sample_rate, "share of jobs re-executed by the verifier")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  cmd->add_option("--window", o->window, "unanswered SUBMITs in flight at most")->capture_default_str();
  cmd->add_option("--settle-timeout", o->settle_timeout_s, "seconds to wait for settlement")->capture_default_str();
  cmd->add_option("--model", o->model, "model file to serve (a generated MLP if it does not exist)")
      ->capture_default_str();
  cmd->add_option("--data", o->data, "Fashion-MNIST directory: test images become the jobs (random inputs if absent)")
      ->capture_default_str();
  cmd->add_flag("--serve", o->serve,
                "serve the dashboard and the admin API (on --http-port, with fresh tokens) and keep the network up "
                "after the summary, until Ctrl-C");
  cmd->add_option("--http-port", o->http_port, "with --serve: the coordinator's HTTP port (dashboard, /api, /metrics)")
      ->check(CLI::Range(1, 65535))
      ->capture_default_str();
  cmd->add_option("--web-dir", o->web_dir, "with --serve: the dashboard's files (default: the coordinator's)");
  cmd->callback([o] {
    if (int rc = run_demo(*o))
      throw CLI::RuntimeError(rc);
  });
}

} // namespace haca::app
