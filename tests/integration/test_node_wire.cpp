// What crosses the wire on the node port: a recording TCP relay between a real provider and the
// coordinator captures every byte of a run, and none of the protocol's plaintext is in it.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <thread>

#include <doctest/doctest.h>
#include <fmt/format.h>

#include "app/process.hpp"
#include "app/workload.hpp"
#include "harness.hpp"

using namespace haca;

namespace {

// Accepts one connection on a port of its own and relays it to `target_port`, keeping a copy
// of every byte both ways.
class recording_relay {
public:
  explicit recording_relay(int target_port) : port_(app::free_port()) {
    listener_ = ::socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    ::setsockopt(listener_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<std::uint16_t>(port_));
    REQUIRE(::bind(listener_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(listener_, 4) == 0);
    thread_ = std::thread([this, target_port] { run(target_port); });
  }
  ~recording_relay() {
    stop_ = true;
    thread_.join();
    ::close(listener_);
  }
  int port() const { return port_; }
  std::string captured() {
    std::lock_guard lock(mu_);
    return bytes_;
  }

private:
  // One connection at a time, as often as the node reconnects (its first try may come before
  // the coordinator listens: then the relay drops it and the node tries again).
  void run(int target_port) {
    while (!stop_) {
      pollfd l{listener_, POLLIN, 0};
      if (::poll(&l, 1, 100) <= 0)
        continue;
      const int down = ::accept(listener_, nullptr, nullptr);
      const int up = ::socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      a.sin_port = htons(static_cast<std::uint16_t>(target_port));
      if (::connect(up, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0)
        relay(down, up);
      ::close(down);
      ::close(up);
    }
  }

  void relay(int down, int up) {
    char buf[65536];
    while (!stop_) {
      pollfd p[2] = {{down, POLLIN, 0}, {up, POLLIN, 0}};
      if (::poll(p, 2, 100) <= 0)
        continue;
      for (int i = 0; i < 2; ++i) {
        if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
          continue;
        const auto n = ::read(p[i].fd, buf, sizeof buf);
        if (n <= 0)
          return;
        {
          std::lock_guard lock(mu_);
          bytes_.append(buf, static_cast<std::size_t>(n));
        }
        if (::write(i == 0 ? up : down, buf, static_cast<std::size_t>(n)) != n)
          return;
      }
    }
  }

  int port_;
  int listener_ = -1;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::mutex mu_;
  std::string bytes_;
};

} // namespace

TEST_CASE("captures of both ports during a run hold no plaintext protocol header, input or result") {
  test::network_options o;
  o.providers = 0; // the provider below connects through the relay
  o.verifiers = 0;
  test::network net(o);
  const int node_port = std::stoi(net.node_endpoint().substr(net.node_endpoint().rfind(':') + 1));
  recording_relay relay(node_port);
  const auto name = test::unique_id("relayed");
  auto provider = app::start_process(
      name, HACA_BINARY,
      {"provider", "--connect", fmt::format("tcp://127.0.0.1:{}", relay.port()), "--coordinator-key",
       net.coordinator_key(), "--models", net.models_dir(), "--name", name, "--key", net.dir() + "/keys/relayed.key"},
      net.dir() + "/logs/relayed.log");
  REQUIRE(test::eventually(
      [&] { return test::query_value(fmt::format("select count(*) from providers where name = '{}'", name)) == "1"; }));
  const int client_port = std::stoi(net.client_endpoint().substr(net.client_endpoint().rfind(':') + 1));
  recording_relay client_relay(client_port);
  auto w = net.workload(20, "none", 5);
  w.endpoint = fmt::format("tcp://127.0.0.1:{}", client_relay.port()); // through the recording relay
  auto rep = app::run_workload(w);
  INFO(net.logs());
  REQUIRE(rep.results == 20);
  app::stop_process(provider);

  const auto wire = relay.captured();
  MESSAGE(fmt::format("captured {} bytes of the node port", wire.size()));
  CHECK(wire.size() > 20 * 700); // 20 JOBs with their inputs went through it
  // The handshake names its mechanism and its own commands in the clear (ZMTP's CURVE HELLO,
  // WELCOME, INITIATE and READY, not haca's); everything after it is encrypted.
  CHECK(wire.find("CURVE") != std::string::npos);
  for (const std::string& plain : std::vector<std::string>{"HACA/1", "HEARTBEAT", "DONE", "JOB", "receipt", "trace_root",
                                                           "capabilities", "public_key", net.model_hash(),
                                                           rep.jobs[0].receipt.signature})
    CHECK_MESSAGE(wire.find(plain) == std::string::npos, "plaintext on the node port: ", plain.substr(0, 24));

  // The client port likewise: no command, header field, input bytes or receipt in the clear.
  const auto client_wire = client_relay.captured();
  MESSAGE(fmt::format("captured {} bytes of the client port", client_wire.size()));
  CHECK(client_wire.size() > 20 * 700); // 20 SUBMITs with their inputs
  CHECK(client_wire.find("CURVE") != std::string::npos);
  for (const std::string& plain : std::vector<std::string>{"HACA/1", "SUBMIT", "RESULT", "request_id", "receipt",
                                                           net.model_hash(), w.inputs[0].data.substr(0, 32),
                                                           rep.jobs[0].receipt.signature})
    CHECK_MESSAGE(client_wire.find(plain) == std::string::npos, "plaintext on the client port: ", plain.substr(0, 24));
}
