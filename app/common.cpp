#include "app/common.hpp"

#include <csignal>
#include <pthread.h>
#include <filesystem>

#include <sodium.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace haca::app {
namespace {
std::atomic<bool> stop_flag{false};
extern "C" void on_stop_signal(int) { stop_flag = true; }
} // namespace

std::string random_hex(std::size_t bytes) {
  std::string raw(bytes, '\0');
  randombytes_buf(raw.data(), raw.size());
  std::string hex(2 * bytes + 1, '\0');
  sodium_bin2hex(hex.data(), hex.size(), reinterpret_cast<const unsigned char*>(raw.data()), raw.size());
  hex.pop_back(); // the terminating NUL
  return hex;
}

result<std::map<std::string, kernels::model>> load_models_dir(const std::string& dir) {
  std::map<std::string, kernels::model> out;
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec))
    return make_error(errc::io_error, fmt::format("model directory '{}' does not exist (create one with "
                                                  "'haca model gen --out {}/mlp.safetensors')",
                                                  dir, dir));
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    if (entry.path().extension() != ".safetensors")
      continue;
    // A bad file is reported and skipped: it must not take the node down with the good ones.
    auto m = kernels::load_model_file(entry.path().string());
    if (!m) {
      spdlog::error("skipping model {}: {} ({})", entry.path().string(), m.err().reason, m.err().code);
      continue;
    }
    out.emplace(m->hash, std::move(m.value()));
  }
  return out;
}

const std::atomic<bool>& stop_requested() { return stop_flag; }

void install_stop_handlers() {
  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGTERM, on_stop_signal);
}

namespace {
sigset_t stop_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}
} // namespace

void block_stop_signals() {
  auto set = stop_signals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

void wait_for_stop_signal() {
  auto set = stop_signals();
  int sig = 0;
  sigwait(&set, &sig);
  stop_flag = true;
}

caf::actor_system_config responsive_actor_config() {
  caf::actor_system_config cfg;
  // Work sharing: an idle worker sleeps on a condition variable and wakes when a message
  // arrives, instead of polling (work stealing's idle workers poll, then sleep up to their
  // relaxed sleep duration): no spinning on a busy 2-core host, no sleeping past a message.
  cfg.set("scheduler.policy", caf::atom("sharing"));
  return cfg;
}

void add_log_level_option(CLI::App& cmd, std::string& level) {
  cmd.add_option("--log-level", level, "trace, debug, info, warn, error or off")->capture_default_str();
}

void set_log_level(const std::string& level) {
  spdlog::set_level(spdlog::level::from_str(level));
  spdlog::set_pattern("%H:%M:%S.%e %^%l%$ %v");
}

} // namespace haca::app
