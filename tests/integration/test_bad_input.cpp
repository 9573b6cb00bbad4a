// Bad input on both ports, against a real coordinator: every refusal is an ERROR with the
// stable code (proto/error.hpp, docs/PROTOCOL.md section 6) and a readable reason, and changes
// no state. The node-port cases use a fake provider written here, speaking the protocol with
// its own key, so that it can send receipts no real provider would.
#include <chrono>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <thread>

#include <doctest/doctest.h>
#include <fmt/format.h>

#include "app/workload.hpp"
#include "harness.hpp"
#include "kernels/model.hpp"
#include "net/curve.hpp"
#include "kernels/ops.hpp"
#include "net/zmq_io.hpp"
#include "proto/commands.hpp"
#include "verify/hash.hpp"
#include "verify/receipt.hpp"

using namespace haca;
using namespace std::chrono_literals;

namespace {

std::int64_t now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// One coordinator, provider and no verifier, shared by the client-port cases (each uses its own
// client id, so the state checks are per client). Jobs here use tier "none".
test::network& client_net() {
  static test::network net{[] {
    test::network_options o;
    o.verifiers = 0;
    return o;
  }()};
  return net;
}

// A DEALER that sends raw frames or messages and reads replies (nullopt on timeout).
class peer {
public:
  explicit peer(const std::string& endpoint) : s_(net::context(), zmq::socket_type::dealer) {
    s_.set(zmq::sockopt::linger, 0);
    s_.connect(endpoint);
  }
  // A client's connection: CurveZMQ with its key, which is its account.
  peer(const std::string& endpoint, const net::client_credentials& who) : peer(endpoint, who.key, who.coordinator_key) {}
  // A node's connection: CurveZMQ with `key` to the coordinator whose public key is given; a
  // routing id of its own choosing when one is given.
  peer(const std::string& endpoint, const verify::key_pair& key, const std::string& coordinator_key,
       const std::string& routing_id = {})
      : s_(net::context(), zmq::socket_type::dealer) {
    s_.set(zmq::sockopt::linger, 0);
    if (!routing_id.empty())
      s_.set(zmq::sockopt::routing_id, zmq::buffer(routing_id));
    REQUIRE(net::make_curve_client(s_, key, coordinator_key));
    s_.connect(endpoint);
  }
  void send(const std::vector<std::string>& frames) { net::send_frames(s_, frames); }
  void send(const proto::message& m) { net::send_message(s_, m); }
  std::optional<proto::message> receive(std::chrono::milliseconds timeout) {
    zmq::pollitem_t item{s_.handle(), 0, ZMQ_POLLIN, 0};
    if (net::poll(&item, 1, timeout) == 0)
      return std::nullopt;
    std::vector<std::string> frames;
    net::recv_frames(s_, frames);
    auto m = proto::decode(frames);
    REQUIRE_MESSAGE(m.ok(), "the coordinator sent a message that does not decode: ", (m.ok() ? std::string{} : m.err().reason));
    return m.value();
  }

private:
  zmq::socket_t s_;
};

proto::submit_request submit_request(const std::string& client, const std::string& request, const std::string& model,
                                     int input_dim, std::int64_t max_price = 100) {
  proto::submit_request s;
  s.client_id = client;
  s.request_id = request;
  s.model = model;
  s.tier = "none";
  s.max_price = max_price;
  s.input = app::random_inputs(1, input_dim, 42)[0];
  return s;
}

std::vector<std::string> submit_frames(test::network& net, const std::string& client, const std::string& request) {
  return proto::encode(proto::make_submit(submit_request(client, request, net.model_hash(), net.input_dim())));
}

// Checks that `reply` is an ERROR with `code` and a non-empty reason; returns it.
proto::error_reply expect_error(const std::optional<proto::message>& reply, const char* code) {
  REQUIRE_MESSAGE(reply.has_value(), "no reply within the timeout; expected ERROR ", std::string(code));
  REQUIRE_MESSAGE(reply->command == "ERROR", "expected ERROR ", std::string(code), ", got ", reply->command, " ",
                  reply->header.dump());
  auto e = proto::parse_error(*reply);
  REQUIRE_MESSAGE(e.ok(), (e.ok() ? std::string{} : e.err().reason));
  CHECK(e->code == code);
  CHECK_MESSAGE(e->reason.size() >= 10, "reason is not a readable sentence: '", e->reason, "'");
  return e.value();
}

// What the coordinator has recorded about one client.
struct client_state {
  std::string jobs, events, receipts, account;
  bool operator==(const client_state&) const = default;
};

client_state state_of(const std::string& client) {
  auto q = [&](const char* sql) { return test::query_value(fmt::format(fmt::runtime(sql), client)); };
  return {q("select count(*) from jobs where client_id = '{}'"),
          q("select count(*) from job_events e join jobs j on j.id = e.job_id where j.client_id = '{}'"),
          q("select count(*) from receipts r join jobs j on j.id = r.job_id where j.client_id = '{}'"),
          q("select coalesce(max(balance)::text, 'none') from accounts where id = 'client:{}'")};
}

// Lets anything the coordinator might have started (writes go through its store actor) land:
// a STATUS round trip passes the job queue and the store after the refused message did.
void settle_down(test::network& net) {
  peer p{net.client_endpoint(), net.new_client()};
  p.send(proto::make_job_query({0}));
  auto reply = p.receive(5s);
  REQUIRE(reply.has_value());
  std::this_thread::sleep_for(100ms);
}

// Sends `frames` as a fresh client and expects ERROR `code` with no change to `client`'s state.
proto::error_reply refused_without_effect(const std::vector<std::string>& frames, const char* code,
                                          const net::client_credentials& who) {
  auto& net = client_net();
  const auto client = who.account();
  auto before = state_of(client);
  peer p{net.client_endpoint(), who};
  p.send(frames);
  auto e = expect_error(p.receive(10s), code);
  CHECK(!p.receive(200ms).has_value()); // exactly one reply
  settle_down(net);
  CHECK(state_of(client) == before);
  return e;
}

} // namespace

// ---------------------------------------------------------------- client port: framing

TEST_CASE("a single frame is refused as malformed_frame and creates nothing") {
  auto& net = client_net();
  const auto who = net.new_client();
  const auto client = who.account();
  auto frames = submit_frames(net, client, "r-1");
  auto e = refused_without_effect({frames[2]}, errc::malformed_frame, who); // the header alone
  CHECK(e.reason.find("got 1") != std::string::npos);
  CHECK(e.request_id.empty()); // an undecodable message has no request id
}

TEST_CASE("two frames are refused as malformed_frame and the same socket is still served afterwards") {
  auto& net = client_net();
  const auto who = net.new_client();
  const auto client = who.account();
  auto before = state_of(client);
  peer p{net.client_endpoint(), who};
  p.send(std::vector<std::string>{"HACA/1", "SUBMIT"});
  auto e = expect_error(p.receive(10s), errc::malformed_frame);
  CHECK(e.reason.find("got 2") != std::string::npos);
  settle_down(net);
  CHECK(state_of(client) == before);

  // The coordinator (and this connection) still serves a valid job, exactly once.
  p.send(submit_frames(net, client, "r-ok"));
  auto ack = p.receive(10s);
  REQUIRE(ack.has_value());
  REQUIRE_MESSAGE(ack->command == "ACK", ack->header.dump());
  auto result = p.receive(10s);
  REQUIRE(result.has_value());
  REQUIRE_MESSAGE(result->command == "RESULT", result->header.dump());
  auto r = proto::parse_result(*result);
  REQUIRE(r.ok());
  CHECK(r->request_id == "r-ok");
  CHECK(verify::verify_receipt(r->receipt));
  CHECK(verify::sha256_hex(r->output.data) == r->receipt.output_hash);
  CHECK(!p.receive(300ms).has_value());
  CHECK(test::query_value(fmt::format("select count(*) from jobs where client_id = '{}'", client)) == "1");
}

TEST_CASE("a wrong protocol tag HACA/2 is refused as unknown_version and creates nothing") {
  auto& net = client_net();
  const auto who = net.new_client();
  const auto client = who.account();
  auto frames = submit_frames(net, client, "r-1");
  frames[0] = "HACA/2";
  auto e = refused_without_effect(frames, errc::unknown_version, who);
  CHECK(e.reason.find("HACA/2") != std::string::npos);
  CHECK(e.reason.find("HACA/1") != std::string::npos);
}

TEST_CASE("an unknown command FROB is refused as unknown_command and creates nothing") {
  auto& net = client_net();
  const auto who = net.new_client();
  const auto client = who.account();
  auto frames = submit_frames(net, client, "r-1");
  frames[1] = "FROB";
  auto e = refused_without_effect(frames, errc::unknown_command, who);
  CHECK(e.reason.find("FROB") != std::string::npos);
}

TEST_CASE("a header that is not JSON is refused as malformed_frame and creates nothing") {
  auto& net = client_net();
  const auto who = net.new_client();
  const auto client = who.account();
  auto frames = submit_frames(net, client, "r-1");
  frames[2] = frames[2].substr(0, frames[2].size() / 2); // cut in the middle
  auto e = refused_without_effect(frames, errc::malformed_frame, who);
  CHECK(e.reason.find("JSON") != std::string::npos);
}

TEST_CASE("a header that is a JSON array is refused as malformed_frame and creates nothing") {
  auto& net = client_net();
  const auto who = net.new_client();
  const auto client = who.account();
  auto frames = submit_frames(net, client, "r-1");
  frames[2] = "[" + frames[2] + "]";
  auto e = refused_without_effect(frames, errc::malformed_frame, who);
  CHECK(e.reason.find("array") != std::string::npos);
}

// ---------------------------------------------------------------- client port: SUBMIT fields

TEST_CASE("a SUBMIT without 'model' is refused as missing_field naming the field and creates nothing") {
  auto& net = client_net();
  const auto who = net.new_client();
  const auto client = who.account();
  auto m = proto::make_submit(submit_request(client, "r-1", net.model_hash(), net.input_dim()));
  m.header.erase("model");
  auto e = refused_without_effect(proto::encode(m), errc::missing_field, who);
  CHECK(e.reason.find("'model'") != std::string::npos);
  CHECK(e.request_id == "r-1");
}

TEST_CASE("a SUBMIT whose max_price is a string is refused as bad_input naming the field, with its request id") {
  auto& net = client_net();
  const auto who = net.new_client();
  const auto client = who.account();
  auto m = proto::make_submit(submit_request(client, "r-1", net.model_hash(), net.input_dim()));
  m.header["max_price"] = "100";
  auto e = refused_without_effect(proto::encode(m), errc::bad_input, who);
  CHECK(e.reason == "SUBMIT field 'max_price' must be an integer, got string");
  CHECK(e.request_id == "r-1");
}

TEST_CASE("a SUBMIT whose request_id is not a valid id is refused as bad_input and the ERROR carries no request id") {
  auto& net = client_net();
  for (const std::string& bad : {std::string("r 1"), std::string(129, 'r'), std::string("r\0" "1", 3), std::string()}) {
    CAPTURE(bad.size());
    const auto who = net.new_client();
    const auto client = who.account();
    auto m = proto::make_submit(submit_request(client, "r-1", net.model_hash(), net.input_dim()));
    m.header["request_id"] = bad;
    auto e = refused_without_effect(proto::encode(m), errc::bad_input, who);
    CHECK(e.reason.find("SUBMIT field 'request_id' must be 1 to 128 printable ASCII characters") == 0);
    CHECK(e.request_id.empty());
  }
}

TEST_CASE("a SUBMIT for an unknown model hash is refused as unknown_model and creates nothing") {
  auto& net = client_net();
  const auto who = net.new_client();
  const auto client = who.account();
  auto unknown = verify::sha256_hex("no such model");
  auto frames = proto::encode(proto::make_submit(submit_request(client, "r-1", unknown, net.input_dim())));
  auto e = refused_without_effect(frames, errc::unknown_model, who);
  CHECK(e.reason.find(unknown.substr(0, 12)) != std::string::npos);
  CHECK(e.request_id == "r-1");
}

TEST_CASE("an input of the wrong shape [1,783] is refused as bad_input and creates nothing") {
  auto& net = client_net();
  const auto who = net.new_client();
  const auto client = who.account();
  auto s = submit_request(client, "r-1", net.model_hash(), net.input_dim());
  s.input = app::random_inputs(1, net.input_dim() - 1, 1)[0];
  REQUIRE(s.input.shape == std::vector<std::int64_t>{1, 783});
  auto e = refused_without_effect(proto::encode(proto::make_submit(s)), errc::bad_input, who);
  CHECK(e.reason.find("783") != std::string::npos);
  CHECK(e.request_id == "r-1");
}

TEST_CASE("an input of dtype i32 is refused as bad_input and creates nothing") {
  auto& net = client_net();
  const auto who = net.new_client();
  const auto client = who.account();
  auto s = submit_request(client, "r-1", net.model_hash(), net.input_dim());
  s.input.type = kernels::dtype::i32;
  s.input.data.assign(static_cast<std::size_t>(net.input_dim()) * 4, '\0'); // a well-formed i32 [1, 784]
  auto e = refused_without_effect(proto::encode(proto::make_submit(s)), errc::bad_input, who);
  CHECK(e.reason.find("i32") != std::string::npos);
  CHECK(e.request_id == "r-1");
}

TEST_CASE("a tensor declared larger than the limit is refused as oversized from its header alone") {
  auto& net = client_net();
  const auto who = net.new_client();
  const auto client = who.account();
  auto m = proto::make_submit(submit_request(client, "r-1", net.model_hash(), net.input_dim()));
  auto frames = proto::encode(m);
  auto header = nlohmann::json::parse(frames[2]);
  header["tensors"][0]["shape"] = {1, 10000000};
  frames[2] = header.dump();
  frames[3] = std::string(16, '\x01'); // a tiny frame: the size is checked before the payload
  auto e = refused_without_effect(frames, errc::oversized, who);
  CHECK(e.reason.find("10000000") != std::string::npos);
}

TEST_CASE("a payload frame whose byte count differs from its header is refused as bad_input") {
  auto& net = client_net();
  const auto who = net.new_client();
  const auto client = who.account();
  auto frames = submit_frames(net, client, "r-1");
  frames[3].pop_back(); // 783 bytes, the header declares 1x784
  auto e = refused_without_effect(frames, errc::bad_input, who);
  CHECK(e.reason.find("783") != std::string::npos);
  CHECK(e.reason.find("784") != std::string::npos);
}

TEST_CASE("a max_price above the client's funds is refused as insufficient_funds and holds nothing") {
  auto& net = client_net();
  const auto who = net.new_client();
  const auto client = who.account();
  peer p{net.client_endpoint(), who};
  p.send(proto::make_submit(submit_request(client, "r-1", net.model_hash(), net.input_dim(), 2000000000)));
  auto e = expect_error(p.receive(10s), errc::insufficient_funds);
  CHECK(e.request_id == "r-1");
  settle_down(net);
  auto after = state_of(client);
  CHECK(after.jobs == "0");
  CHECK(after.events == "0");
  CHECK(after.receipts == "0");
  CHECK(after.account == "none"); // no faucet grant for a refused SUBMIT

  // Nothing stayed on hold: the whole faucet grant (1 000 000 000) still covers a job.
  p.send(proto::make_submit(submit_request(client, "r-2", net.model_hash(), net.input_dim(), 1000000000)));
  auto ack = p.receive(10s);
  REQUIRE(ack.has_value());
  CHECK_MESSAGE(ack->command == "ACK", ack->header.dump());
}

TEST_CASE("a request id sent twice runs once: the resend gets the same job's ACK and RESULT, and no second charge") {
  auto& net = client_net();
  const auto who = net.new_client();
  const auto client = who.account();
  peer p{net.client_endpoint(), who};
  auto m = proto::make_submit(submit_request(client, "r-1", net.model_hash(), net.input_dim()));
  p.send(m);
  auto ack = p.receive(10s);
  REQUIRE(ack.has_value());
  REQUIRE_MESSAGE(ack->command == "ACK", ack->header.dump());
  auto job_id = proto::parse_ack(*ack)->job_id;

  p.send(m);
  std::vector<proto::message> replies;
  while (auto r = p.receive(1500ms))
    replies.push_back(*r);
  int acks = 0, results = 0;
  std::string receipt_hash;
  for (const auto& r : replies) {
    if (r.command == "RESULT") {
      ++results;
      auto res = proto::parse_result(r);
      REQUIRE(res.ok());
      CHECK(res->job_id == job_id);
      CHECK(res->request_id == "r-1");
      // Every RESULT of one request id is the same result.
      if (receipt_hash.empty())
        receipt_hash = verify::receipt_hash(res->receipt);
      CHECK(verify::receipt_hash(res->receipt) == receipt_hash);
    } else {
      REQUIRE_MESSAGE(r.command == "ACK", r.command, " ", r.header.dump());
      ++acks;
      CHECK(proto::parse_ack(r)->job_id == job_id);
    }
  }
  CHECK(acks == 1);                  // the resend's ACK names the same job
  CHECK(results >= 1);
  CHECK(results <= 2);               // the resend may bring the RESULT again, never another job's
  CHECK(test::query_value(fmt::format("select count(*) from jobs where client_id = '{}'", client)) == "1");
  CHECK(test::query_value(fmt::format("select count(*) from job_events where job_id = {} and state = 'SUBMITTED'",
                                      job_id)) == "1");
  CHECK(test::eventually([&] {
    return test::query_value(fmt::format("select count(*) from blocks where {} = any (job_ids)", job_id)) == "1";
  }));
}

// ---------------------------------------------------------------- node port

namespace {

proto::capabilities provider_caps(const std::string& name, const verify::key_pair& key, const std::string& model) {
  proto::capabilities c;
  c.role = "provider";
  c.name = name;
  c.public_key = key.public_key_hex;
  c.device = "cpu";
  c.backends = {"reference"};
  c.models = {model};
  c.price = 10;
  c.memory_bytes = 1 << 30;
  c.timestamp_us = now_us();
  return c;
}

std::string providers_with_key(const std::string& key) {
  return test::query_value(fmt::format("select count(*) from providers where public_key = '{}'", key));
}

} // namespace

TEST_CASE("a HELLO whose capabilities were altered after signing is refused as bad_signature and registers nothing") {
  auto& net = client_net();
  auto key = verify::generate_key_pair();
  auto hello = proto::make_hello(provider_caps(test::unique_id("forged"), key, net.model_hash()), key);
  hello.header["capabilities"]["price"] = 1; // cheaper than what was signed
  peer node{net.node_endpoint(), key, net.coordinator_key()};
  node.send(hello);
  auto e = expect_error(node.receive(10s), errc::bad_signature);
  CHECK(e.reason.find(key.public_key_hex.substr(0, 8)) != std::string::npos);
  std::this_thread::sleep_for(300ms);
  CHECK(providers_with_key(key.public_key_hex) == "0");

  // Still unregistered: a node command is refused.
  node.send(proto::make_ready(1));
  expect_error(node.receive(10s), errc::not_registered);
}

TEST_CASE("a node command before HELLO is refused as not_registered") {
  auto& net = client_net();
  peer node{net.node_endpoint(), verify::generate_key_pair(), net.coordinator_key()};
  node.send(proto::make_ready(1));
  auto e = expect_error(node.receive(10s), errc::not_registered);
  CHECK(e.reason.find("HELLO") != std::string::npos);
  CHECK(!node.receive(200ms).has_value()); // and no JOB follows
}

namespace {

// A provider written here: it answers JOBs only when told to, and keeps its session alive by
// sending HEARTBEAT every 100 ms (the harness coordinator drops a node silent for 1.5 s).
class fake_provider {
public:
  fake_provider(test::network& net, const std::string& name)
      : key_(verify::generate_key_pair()), sock_(net.node_endpoint(), key_, net.coordinator_key()),
        model_(kernels::load_model_file(net.models_dir() + "/mlp.safetensors").value()) {
    sock_.send(proto::make_hello(provider_caps(name, key_, net.model_hash()), key_));
    auto welcome = next(10s);
    REQUIRE(welcome.has_value());
    REQUIRE_MESSAGE(welcome->command == "WELCOME", welcome->header.dump());
    sock_.send(proto::make_ready(1));
  }
  ~fake_provider() { sock_.send(proto::make_disconnect("test over")); }

  const verify::key_pair& key() const { return key_; }

  void keep_alive() {
    auto now = std::chrono::steady_clock::now();
    if (now - last_beat_ > 100ms) {
      sock_.send(proto::make_heartbeat());
      last_beat_ = now;
    }
  }
  // The next message other than HEARTBEAT, heartbeating meanwhile.
  std::optional<proto::message> next(std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      keep_alive();
      if (auto m = sock_.receive(20ms); m && m->command != "HEARTBEAT")
        return m;
    }
    return std::nullopt;
  }
  void send(const proto::message& m) { sock_.send(m); }

  // The DONE an honest provider would send for `job`.
  proto::job_done honest_done(const proto::job_order& job) {
    auto started = now_us();
    auto inf = kernels::run_model(model_, job.input, kernels::reference_backend());
    REQUIRE(inf.ok());
    verify::receipt r;
    r.job_id = job.job_id;
    r.model_hash = job.model;
    r.input_hash = verify::sha256_hex(job.input.data);
    r.output_hash = inf->output_hash;
    r.trace_root = inf->trace_root;
    r.price = job.price;
    r.attempt = job.attempt;
    r.started_at_us = started;
    r.finished_at_us = now_us();
    verify::sign_receipt(r, key_);
    return {job.job_id, job.attempt, inf->classes, inf->output, r, inf->layer_hashes};
  }

private:
  verify::key_pair key_;
  peer sock_;
  kernels::model model_;
  std::chrono::steady_clock::time_point last_beat_{};
};

// Reads `client` for `duration` while the fake provider stays alive.
std::vector<proto::message> drain(peer& client, fake_provider& fake, std::chrono::milliseconds duration) {
  std::vector<proto::message> out;
  auto deadline = std::chrono::steady_clock::now() + duration;
  while (std::chrono::steady_clock::now() < deadline) {
    fake.keep_alive();
    if (auto m = client.receive(20ms))
      out.push_back(*m);
  }
  return out;
}

std::optional<proto::message> await(peer& client, fake_provider& fake, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    fake.keep_alive();
    if (auto m = client.receive(20ms))
      return m;
  }
  return std::nullopt;
}

// The fake provider receives a job, answers it with `tamper`ed DONE (refused with `code`, the
// job staying ASSIGNED and the client hearing nothing), then with an honest DONE: the client
// gets exactly one RESULT, signed by the fake.
void bad_then_good_done(const std::function<void(proto::job_done&, const verify::key_pair&)>& tamper,
                        const char* code) {
  test::network_options o;
  o.providers = 0;
  o.verifiers = 0;
  test::network net{o};
  fake_provider fake{net, test::unique_id("fake")};
  REQUIRE(test::eventually([&] { return providers_with_key(fake.key().public_key_hex) == "1"; }, 10s));

  const auto who = net.new_client();
  peer client{net.client_endpoint(), who};
  client.send(proto::make_submit(submit_request(who.account(), "r-1", net.model_hash(), net.input_dim())));
  auto ack = await(client, fake, 10s);
  REQUIRE(ack.has_value());
  REQUIRE_MESSAGE(ack->command == "ACK", ack->header.dump());
  auto job_id = proto::parse_ack(*ack)->job_id;

  auto job_msg = fake.next(10s);
  INFO(net.logs());
  REQUIRE(job_msg.has_value());
  REQUIRE_MESSAGE(job_msg->command == "JOB", job_msg->header.dump());
  auto job = proto::parse_job(*job_msg);
  REQUIRE(job.ok());
  CHECK(job->job_id == job_id);
  auto job_state = [&] { return test::query_value(fmt::format("select state from jobs where id = {}", job_id)); };
  auto receipts = [&] { return test::query_value(fmt::format("select count(*) from receipts where job_id = {}", job_id)); };
  REQUIRE(test::eventually([&] { fake.keep_alive(); return job_state() == "ASSIGNED"; }, 5s));
  auto events_before =
      test::query_value(fmt::format("select count(*) from job_events where job_id = {}", job_id));

  auto honest = fake.honest_done(job.value());
  auto bad = honest;
  tamper(bad, fake.key());
  fake.send(proto::make_done(bad));
  auto e = expect_error(fake.next(10s), code);
  CHECK(e.job_id == job_id);
  CHECK(e.reason.find(std::to_string(job_id)) != std::string::npos);

  // Refused: the client hears nothing, the job is still assigned to the fake, nothing recorded.
  auto heard = drain(client, fake, 500ms);
  CHECK_MESSAGE(heard.empty(), (heard.empty() ? std::string{} : heard[0].command + " " + heard[0].header.dump()));
  CHECK(job_state() == "ASSIGNED");
  CHECK(receipts() == "0");
  CHECK(test::query_value(fmt::format("select count(*) from job_events where job_id = {}", job_id)) == events_before);

  // The honest DONE is accepted: exactly one RESULT, with the fake's receipt.
  fake.send(proto::make_done(honest));
  auto result = await(client, fake, 10s);
  REQUIRE(result.has_value());
  REQUIRE_MESSAGE(result->command == "RESULT", result->header.dump());
  auto r = proto::parse_result(*result);
  REQUIRE(r.ok());
  CHECK(r->job_id == job_id);
  CHECK(r->request_id == "r-1");
  CHECK(r->receipt.provider_key == fake.key().public_key_hex);
  CHECK(r->receipt.signature == honest.receipt.signature);
  CHECK(verify::verify_receipt(r->receipt));
  CHECK(verify::sha256_hex(r->output.data) == r->receipt.output_hash);
  CHECK(r->classes == honest.classes);
  CHECK(drain(client, fake, 500ms).empty());
  CHECK(test::eventually([&] { fake.keep_alive(); return receipts() == "1"; }, 5s));
}

} // namespace

TEST_CASE("a DONE whose receipt signature is corrupted is refused as bad_signature and the job waits for a valid one") {
  bad_then_good_done(
      [](proto::job_done& d, const verify::key_pair&) {
        auto& sig = d.receipt.signature;
        sig[10] = sig[10] == '0' ? '1' : '0'; // still 128 hex characters
      },
      errc::bad_signature);
}

TEST_CASE("a DONE with a valid signature over a wrong output_hash is refused as bad_receipt and the job waits") {
  bad_then_good_done(
      [](proto::job_done& d, const verify::key_pair& key) {
        d.receipt.output_hash = verify::sha256_hex("not the output"); // signed, but not the frame's hash
        verify::sign_receipt(d.receipt, key);
        REQUIRE(verify::verify_receipt(d.receipt));
      },
      errc::bad_receipt);
}

TEST_CASE("a DONE whose classes disagree with its output tensor is refused as bad_receipt and the job waits") {
  // The receipt signs the output's hash, not `classes`: the coordinator must check them
  // against the output it forwards, or a provider could report any prediction.
  bad_then_good_done(
      [](proto::job_done& d, const verify::key_pair&) {
        REQUIRE(!d.classes.empty());
        d.classes[0] = (d.classes[0] + 1) % 10;
      },
      errc::bad_receipt);
}

TEST_CASE("a DONE with 9 output values for a 10-class model, hash, classes and receipt consistent, is refused") {
  bad_then_good_done(
      [](proto::job_done& d, const verify::key_pair& key) {
        REQUIRE(d.output.shape == std::vector<std::int64_t>{1, 10});
        d.output.shape = {1, 9};
        d.output.data.resize(9);
        kernels::argmax_rows(d.output.i8(), 1, 9, d.classes.data());
        d.receipt.output_hash = verify::sha256_hex(d.output.data);
        verify::sign_receipt(d.receipt, key);
        REQUIRE(verify::verify_receipt(d.receipt));
      },
      errc::bad_receipt);
}

TEST_CASE("the node port speaks only CurveZMQ: a plaintext or wrongly keyed node gets nothing and registers nothing") {
  auto& net = client_net();
  SUBCASE("plaintext") {
    auto key = verify::generate_key_pair();
    peer plain{net.node_endpoint()};
    plain.send(proto::make_hello(provider_caps(test::unique_id("plain"), key, net.model_hash()), key));
    CHECK_FALSE(plain.receive(2s).has_value());
    CHECK(providers_with_key(key.public_key_hex) == "0");
  }
  SUBCASE("CurveZMQ to another coordinator's key") {
    auto key = verify::generate_key_pair();
    peer wrong{net.node_endpoint(), key, verify::generate_key_pair().public_key_hex};
    wrong.send(proto::make_hello(provider_caps(test::unique_id("wrong"), key, net.model_hash()), key));
    CHECK_FALSE(wrong.receive(2s).has_value());
    CHECK(providers_with_key(key.public_key_hex) == "0");
  }
}

// ---------------------------------------------------------------- accounts

TEST_CASE("the client port speaks only CurveZMQ: a plaintext client gets nothing and creates nothing") {
  auto& net = client_net();
  const auto jobs_before = test::query_value("select count(*) from jobs");
  peer plain{net.client_endpoint()};
  plain.send(submit_frames(net, verify::sha256_hex("anyone"), "r-1"));
  plain.send(proto::make_job_query({1}));
  CHECK_FALSE(plain.receive(2s).has_value());
  settle_down(net);
  CHECK(test::query_value("select count(*) from jobs") == jobs_before);
}

TEST_CASE("a client whose routing id claims an admin API request's is dropped, and creates nothing") {
  auto& net = client_net();
  const auto who = net.new_client();
  const auto jobs_before = test::query_value("select count(*) from jobs");
  // ZeroMQ lets a peer choose a routing id that starts with a zero byte, as the coordinator's
  // own identities for admin API requests do: answers to it must never be taken for theirs.
  peer claimer{net.client_endpoint(), who.key, who.coordinator_key, std::string("\0admin#1", 8)};
  for (int i = 1; i <= 3; ++i)
    claimer.send(submit_frames(net, who.account(), "claim-" + std::to_string(i)));
  CHECK_FALSE(claimer.receive(2s).has_value());
  settle_down(net);
  CHECK(test::query_value("select count(*) from jobs") == jobs_before);
  // The same key on a connection with an ordinary routing id is served.
  peer plain{net.client_endpoint(), who};
  plain.send(proto::make_job_query({1}));
  CHECK(plain.receive(5s).has_value());
}

TEST_CASE("a SUBMIT naming another account is forbidden and changes nothing for either") {
  auto& net = client_net();
  const auto victim = net.new_client(), thief = net.new_client();
  auto before = state_of(victim.account());
  auto e = refused_without_effect(submit_frames(net, victim.account(), "r-1"), errc::forbidden, thief);
  CHECK(e.request_id == "r-1");
  CHECK(e.reason.find(thief.account()) != std::string::npos);
  CHECK(state_of(victim.account()) == before);
}

TEST_CASE("STATUS, RECEIPT and PROOF answer only the job's own client") {
  auto& net = client_net();
  const auto owner = net.new_client(), other = net.new_client();
  peer p{net.client_endpoint(), owner};
  p.send(submit_frames(net, owner.account(), "r-1"));
  auto ack = p.receive(10s);
  REQUIRE(ack.has_value());
  REQUIRE_MESSAGE(ack->command == "ACK", ack->header.dump());
  const auto job_id = proto::parse_ack(*ack)->job_id;
  REQUIRE(p.receive(10s).has_value()); // its RESULT
  REQUIRE(test::eventually([&] {
    return test::query_value(fmt::format("select state from jobs where id = {}", job_id)) == "SETTLED";
  }));
  peer q{net.client_endpoint(), other};
  for (auto command : {proto::cmd::status, proto::cmd::receipt, proto::cmd::proof}) {
    CAPTURE(command);
    q.send(proto::make_job_query({job_id, std::string(command)}));
    auto e = expect_error(q.receive(10s), errc::forbidden);
    CHECK(e.job_id == job_id);
    p.send(proto::make_job_query({job_id, std::string(command)}));
    auto mine = p.receive(10s);
    REQUIRE(mine.has_value());
    CHECK_MESSAGE(mine->command == command, mine->header.dump());
  }
}

TEST_CASE("DEPOSIT: refused to any key but the admin's; the admin's is stored once per request id") {
  auto& net = client_net();
  const auto payee = net.new_client();
  const auto account = payee.account();
  const auto balance = [&] {
    return test::query_value(fmt::format("select coalesce(max(balance)::text, 'none') from accounts where id = 'client:{}'",
                                         account));
  };
  const auto request_id = test::unique_id("dep");
  const auto postings = [&] {
    return test::query_value(fmt::format("select count(*) from postings where ref = 'deposit:{}'", request_id));
  };
  auto deposit = proto::make_deposit({request_id, account, 5000});
  peer stranger{net.client_endpoint(), net.new_client()};
  stranger.send(deposit);
  expect_error(stranger.receive(10s), errc::forbidden);
  peer self{net.client_endpoint(), payee}; // not even to one's own account
  self.send(deposit);
  expect_error(self.receive(10s), errc::forbidden);
  settle_down(net);
  CHECK(balance() == "none");
  CHECK(postings() == "0");

  const auto admin_key = verify::load_or_create_key(net.dir() + "/keys/coordinator.key").value();
  peer admin{net.client_endpoint(), net::client_credentials{admin_key, net.coordinator_key()}};
  for (bool repeated : {false, true}) {
    admin.send(deposit);
    auto reply = admin.receive(10s);
    REQUIRE(reply.has_value());
    REQUIRE_MESSAGE(reply->command == "DEPOSITED", reply->header.dump());
    auto d = proto::parse_deposited(*reply);
    REQUIRE(d.ok());
    CHECK(d->repeated == repeated);
    CHECK(d->balance == 5000);
    CHECK(balance() == "5000"); // stored before it was answered
    CHECK(postings() == "1");
  }
  // The deposit is spendable: this network's demo faucet adds 1 000 000 000 at the first SUBMIT,
  // so a max_price of that plus 5000 is covered only with the deposit counted.
  peer p{net.client_endpoint(), payee};
  p.send(proto::make_submit(submit_request(account, "r-1", net.model_hash(), net.input_dim(), 1000005000)));
  auto ack = p.receive(10s);
  REQUIRE(ack.has_value());
  CHECK_MESSAGE(ack->command == "ACK", ack->header.dump());
}

TEST_CASE("a HELLO replayed on another node's connection is refused: HELLO is bound to the CurveZMQ key") {
  auto& net = client_net();
  auto victim = verify::generate_key_pair();
  auto attacker = verify::generate_key_pair();
  // The victim's HELLO, captured (signed and valid), sent by the attacker on its own connection.
  auto captured = proto::make_hello(provider_caps(test::unique_id("victim"), victim, net.model_hash()), victim);
  peer node{net.node_endpoint(), attacker, net.coordinator_key()};
  node.send(captured);
  auto e = expect_error(node.receive(10s), errc::bad_signature);
  CHECK(e.reason.find("authenticated (CurveZMQ) with another key") != std::string::npos);
  std::this_thread::sleep_for(300ms);
  CHECK(providers_with_key(victim.public_key_hex) == "0");
  node.send(proto::make_ready(1));
  expect_error(node.receive(10s), errc::not_registered);
}

TEST_CASE("with --node-allow only the listed node keys may connect") {
  auto allowed = verify::generate_key_pair();
  auto other = verify::generate_key_pair();
  const auto file = std::filesystem::temp_directory_path() / (test::unique_id("allow") + ".txt");
  std::ofstream(file) << "# nodes of this pool\n" << allowed.public_key_hex << "\n";
  test::network_options o;
  o.providers = 0;
  o.verifiers = 0;
  o.coordinator_args = {"--node-allow", file.string()};
  test::network net(o);
  peer out{net.node_endpoint(), other, net.coordinator_key()};
  out.send(proto::make_hello(provider_caps(test::unique_id("out"), other, net.model_hash()), other));
  CHECK_FALSE(out.receive(2s).has_value());
  CHECK(providers_with_key(other.public_key_hex) == "0");
  peer in{net.node_endpoint(), allowed, net.coordinator_key()};
  in.send(proto::make_hello(provider_caps(test::unique_id("in"), allowed, net.model_hash()), allowed));
  auto welcome = in.receive(10s);
  REQUIRE(welcome.has_value());
  CHECK(welcome->command == "WELCOME");
  std::filesystem::remove(file);
}
