#include "harness.hpp"

#include <array>
#include <atomic>
#include <cstdio>
#include <sys/wait.h>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <pqxx/pqxx>
#include <stdexcept>
#include <thread>
#include <unistd.h>

#include <fmt/format.h>

#include "net/zmq_io.hpp"
#include "verify/signing.hpp"

namespace haca::test {

namespace {

std::string base_db() {
  const char* url = std::getenv("HACA_TEST_DB");
  return url ? url : "postgresql:///haca_test";
}

std::string current_db; // the running network's database, if any

std::string scratch_name() {
  static std::atomic<int> counter{0};
  return fmt::format("haca_it_{}_{}", ::getpid(), counter++);
}

} // namespace

std::string test_db() { return current_db.empty() ? base_db() : current_db; }

scratch_database::scratch_database() : db::scratch_database(base_db(), scratch_name(), HACA_SOURCE_DIR) {}

std::string unique_id(const std::string& prefix) {
  static std::atomic<int> counter{0};
  return fmt::format("{}-{}-{}-{}", prefix, ::getpid(),
                     std::chrono::system_clock::now().time_since_epoch().count() / 1000, counter++);
}

network::network(network_options o) : client_port_(app::free_port()), node_port_(app::free_port()) {
  outer_db_ = current_db; // a network that outlives this one (a static one) is current again after it
  current_db = db_.url();
  while (node_port_ == client_port_)
    node_port_ = app::free_port();
  http_port_ = app::free_port();
  while (http_port_ == client_port_ || http_port_ == node_port_)
    http_port_ = app::free_port();
  tag_ = unique_id("it");
  dir_ = (std::filesystem::temp_directory_path() / tag_).string();
  models_dir_ = dir_ + "/models";
  std::filesystem::create_directories(models_dir_);
  std::filesystem::create_directories(dir_ + "/keys");
  std::filesystem::create_directories(dir_ + "/logs");
  auto bytes = kernels::save_model(kernels::generate_mlp(1, {784, 64, 10}, "test-mlp"));
  std::ofstream(models_dir_ + "/mlp.safetensors", std::ios::binary).write(bytes.data(), static_cast<long>(bytes.size()));
  model_ = kernels::load_model(bytes).value();
  for (const auto& file : o.extra_models)
    std::filesystem::copy_file(file, std::filesystem::path(models_dir_) / std::filesystem::path(file).filename());

  // The coordinator's key, made here so the nodes know it before it starts (CurveZMQ server key).
  coordinator_key_ = verify::load_or_create_key(dir_ + "/keys/coordinator.key").value().public_key_hex;
  std::vector<std::string> args{"coordinator", "--db", test_db(), "--models", models_dir_, "--client-port",
                                std::to_string(client_port_), "--node-port", std::to_string(node_port_),
                                "--sample-rate", std::to_string(o.sample_rate), "--demo-faucet", "1000000000",
                                "--key", dir_ + "/keys/coordinator.key", "--heartbeat-ms", "500", "--batch-ms", "100",
                                "--http-port", std::to_string(http_port_), "--read-token", read_token,
                                "--admin-token", std::string("tester:") + admin_token};
  args.insert(args.end(), o.coordinator_args.begin(), o.coordinator_args.end());
  coordinator_args_ = args;
  verifier_args_ = o.verifier_args;
  providers_ = o.providers;
  children_.push_back(app::start_process("coordinator", HACA_BINARY, args, dir_ + "/logs/coordinator.log"));
  for (int i = 0; i < o.providers; ++i) {
    auto extra = i < static_cast<int>(o.provider_args.size()) ? o.provider_args[static_cast<std::size_t>(i)]
                                                              : std::vector<std::string>{};
    children_.push_back(start_provider(fmt::format("{}-p{}", tag_, i), extra));
  }
  for (int i = 0; i < o.verifiers; ++i)
    children_.push_back(start_verifier(fmt::format("{}-v{}", tag_, i)));
  if (o.wait_for_nodes && !wait_for_registered(o.providers + o.verifiers))
    throw std::runtime_error("nodes did not register in time:\n" + logs());
}

app::child_process network::start_provider(const std::string& name, const std::vector<std::string>& extra) {
  std::vector<std::string> args{"provider", "--connect", node_endpoint(), "--coordinator-key", coordinator_key_,
                                "--models", models_dir_, "--name", name, "--key", dir_ + "/keys/" + name + ".key"};
  args.insert(args.end(), extra.begin(), extra.end());
  return app::start_process(name, HACA_BINARY, args, dir_ + "/logs/" + name + ".log");
}

app::child_process network::start_verifier(const std::string& name) {
  std::vector<std::string> args{"verifier", "--connect", node_endpoint(), "--coordinator-key", coordinator_key_,
                                "--models", models_dir_, "--name", name, "--key", dir_ + "/keys/" + name + ".key"};
  args.insert(args.end(), verifier_args_.begin(), verifier_args_.end());
  return app::start_process(name, HACA_BINARY, args, dir_ + "/logs/" + name + ".log");
}

void network::restart_coordinator() {
  if (app::running(coordinator()))
    throw std::logic_error("restart_coordinator: the coordinator (pid " + std::to_string(coordinator().pid) +
                           ") is still running");
  coordinator() = app::start_process("coordinator", HACA_BINARY, coordinator_args_, dir_ + "/logs/coordinator.log");
}

network::~network() {
  for (auto it = children_.rbegin(); it != children_.rend(); ++it)
    app::stop_process(*it, 3000);
  current_db = outer_db_;
}

net::client_credentials network::new_client() const { return {verify::generate_key_pair(), coordinator_key_}; }

app::workload_options network::workload(std::size_t jobs, const std::string& tier, std::uint64_t seed) const {
  app::workload_options w;
  w.endpoint = client_endpoint();
  w.credentials = new_client();
  w.model = model_.hash;
  w.tier = tier;
  w.inputs = app::random_inputs(jobs, model_.input_dim(), seed);
  return w;
}

std::string network::client_endpoint() const { return fmt::format("tcp://127.0.0.1:{}", client_port_); }
std::string network::node_endpoint() const { return fmt::format("tcp://127.0.0.1:{}", node_port_); }

bool network::wait_for_registered(int count, std::chrono::milliseconds timeout) {
  return eventually(
      [&] {
        return query_value(fmt::format("select count(*) from providers where name like '{}-%'", tag_)) ==
               std::to_string(count);
      },
      timeout);
}

std::string network::logs() const {
  std::string out;
  for (const auto& c : children_)
    out += fmt::format("--- {} ---\n{}\n", c.name, app::tail_file(c.log_path, 1500));
  return out;
}

std::optional<proto::message> round_trip(net::client& c, const proto::message& m, std::chrono::milliseconds timeout) {
  c.send(m);
  auto reply = c.receive(timeout);
  if (!reply || !*reply)
    return std::nullopt;
  return reply->value();
}

command_result run_command(const std::string& command) {
  command_result r;
  FILE* p = ::popen(command.c_str(), "r");
  if (!p)
    throw std::runtime_error("cannot run: " + command);
  std::array<char, 4096> buf{};
  while (auto n = std::fread(buf.data(), 1, buf.size(), p))
    r.output.append(buf.data(), n);
  int status = ::pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

std::string query_value(const std::string& sql) {
  pqxx::connection conn{test_db()};
  pqxx::read_transaction tx{conn};
  auto r = tx.exec(sql);
  return r.empty() || r[0][0].is_null() ? "" : r[0][0].c_str();
}

bool eventually(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred())
      return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return pred();
}

} // namespace haca::test
