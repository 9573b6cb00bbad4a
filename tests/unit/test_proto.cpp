#include <doctest/doctest.h>

#include <functional>
#include <optional>
#include <random>

#include "proto/commands.hpp"
#include "proto/message.hpp"
#include "verify/hash.hpp"
#include "verify/merkle.hpp"
#include "verify/receipt.hpp"
#include "verify/signing.hpp"

using namespace haca;
using namespace haca::proto;
using json = nlohmann::json;

namespace {

const std::string model_hash = verify::sha256_hex("model");

kernels::tensor i8_tensor(std::vector<std::int64_t> shape) {
  kernels::tensor t;
  t.type = kernels::dtype::i8;
  t.shape = std::move(shape);
  t.data.resize(static_cast<std::size_t>(t.elements()));
  for (std::size_t i = 0; i < t.data.size(); ++i) t.data[i] = static_cast<char>(i * 7 - 100);
  return t;
}

kernels::tensor i32_tensor(std::vector<std::int64_t> shape) {
  kernels::tensor t;
  t.type = kernels::dtype::i32;
  t.shape = std::move(shape);
  t.data.resize(static_cast<std::size_t>(t.elements()) * 4);
  for (std::size_t i = 0; i < t.data.size(); ++i) t.data[i] = static_cast<char>(i * 13);
  return t;
}

verify::key_pair& provider_key() {
  static verify::key_pair k = verify::generate_key_pair();
  return k;
}

// A verdict on job_id, signed (by the test's one key).
verdict_reply signed_verdict(std::int64_t job_id) {
  verify::verdict d;
  d.job_id = job_id;
  d.model_hash = model_hash;
  d.input_hash = verify::sha256_hex("input");
  d.output_hash = verify::sha256_hex("output");
  d.layer_hashes = {verify::sha256_hex("layer 0"), verify::sha256_hex("layer 1")};
  d.trace_root = verify::merkle_root(d.layer_hashes);
  verify::sign_verdict(d, provider_key());
  return {job_id, std::move(d), ""};
}

verify::receipt signed_receipt(const kernels::tensor& input, const kernels::tensor& output) {
  verify::receipt r;
  r.job_id = 42;
  r.model_hash = model_hash;
  r.input_hash = verify::sha256_hex(input.data);
  r.output_hash = verify::sha256_hex(output.data);
  r.trace_root = verify::sha256_hex("trace");
  r.price = 1500;
  r.attempt = 2;
  r.started_at_us = 1'700'000'000'000'000;
  r.finished_at_us = 1'700'000'000'001'234;
  verify::sign_receipt(r, provider_key());
  return r;
}

void check_receipt_equal(const verify::receipt& a, const verify::receipt& b) {
  CHECK(a.job_id == b.job_id);
  CHECK(a.model_hash == b.model_hash);
  CHECK(a.input_hash == b.input_hash);
  CHECK(a.output_hash == b.output_hash);
  CHECK(a.trace_root == b.trace_root);
  CHECK(a.provider_key == b.provider_key);
  CHECK(a.price == b.price);
  CHECK(a.attempt == b.attempt);
  CHECK(a.started_at_us == b.started_at_us);
  CHECK(a.finished_at_us == b.finished_at_us);
  CHECK(a.signature == b.signature);
}

void check_tensor_equal(const kernels::tensor& a, const kernels::tensor& b) {
  CHECK(a.type == b.type);
  CHECK(a.shape == b.shape);
  CHECK(a.data == b.data);
}

// Through the wire and back.
message wire(const message& m) {
  auto d = decode(encode(m));
  REQUIRE_MESSAGE(d.ok(), (d.ok() ? std::string() : d.err().reason));
  return d.value();
}

capabilities sample_capabilities() {
  capabilities c;
  c.role = "provider";
  c.name = "gpu-box-1";
  c.public_key = provider_key().public_key_hex;
  c.device = "cuda";
  c.backends = {"reference", "cpu", "cuda"};
  c.models = {model_hash};
  c.price = 1200;
  c.stake = 1'000'000;
  c.memory_bytes = 80LL << 30;
  c.int8 = true;
  c.timestamp_us = 1'700'000'000'000'000;
  return c;
}

// A valid frame set with one i8 [1, 4] tensor.
std::vector<std::string> valid_frames() { return encode(make_submit({"alice", "r1", model_hash, "full", 10, 0, i8_tensor({1, 4})})); }

error decode_error(const std::vector<std::string>& frames, const limits& lim = {}) {
  auto d = decode(frames, lim);
  REQUIRE_FALSE(d.ok());
  return d.err();
}

std::vector<std::string> with_header(std::vector<std::string> frames, const json& header) {
  frames[2] = header.dump();
  return frames;
}

using parse_fn = std::function<std::optional<error>(const message&)>;

template <class F>
parse_fn checker(F f) {
  return [f](const message& m) -> std::optional<error> {
    auto r = f(m);
    if (r.ok()) return std::nullopt;
    return r.err();
  };
}

// A value of a different JSON type than `v`.
json mistyped(const json& v) {
  if (v.is_string()) return 17;
  if (v.is_number()) return "17";
  if (v.is_boolean()) return "true";
  if (v.is_array()) return json::object();
  return json::array();
}

// Drops and mistypes each field of header (or of the object at `nested`), expecting
// missing_field / bad_input naming the field; `optional` fields may be absent.
void check_fields(const message& valid, const parse_fn& parse, const std::vector<std::string>& optional = {},
                  const std::string& nested = {}) {
  REQUIRE_FALSE(parse(valid).has_value());
  const json& obj = nested.empty() ? valid.header : valid.header.at(nested);
  const std::string prefix = nested.empty() ? "" : nested + ".";
  for (const auto& [key, value] : obj.items()) {
    CAPTURE(valid.command);
    CAPTURE(key);
    const bool is_optional = std::find(optional.begin(), optional.end(), key) != optional.end();
    message dropped = valid;
    json& target = nested.empty() ? dropped.header : dropped.header[nested];
    target.erase(key);
    auto e = parse(dropped);
    if (is_optional) {
      CHECK_FALSE(e.has_value());
    } else {
      REQUIRE(e.has_value());
      CHECK(e->code == errc::missing_field);
      CHECK(e->reason == valid.command + " header lacks '" + prefix + key + "'");
    }
    message wrong = valid;
    json& wtarget = nested.empty() ? wrong.header : wrong.header[nested];
    wtarget[key] = mistyped(value);
    e = parse(wrong);
    REQUIRE(e.has_value());
    CHECK(e->code == errc::bad_input);
    CHECK(e->reason.find(valid.command + " field '" + prefix + key) == 0);
  }
}

} // namespace

TEST_SUITE("proto") {

TEST_CASE("encode lays out tag, command, header and one raw frame per tensor") {
  auto input = i8_tensor({2, 3});
  auto frames = encode(make_submit({"alice", "r1", model_hash, "none", 5, 100, input}));
  REQUIRE(frames.size() == 4);
  CHECK(frames[0] == "HACA/1");
  CHECK(frames[1] == "SUBMIT");
  auto header = json::parse(frames[2]);
  CHECK(header["tensors"] == json::parse(R"([{"dtype":"i8","shape":[2,3]}])"));
  CHECK(header["model"] == model_hash);
  CHECK(frames[3] == input.data);
}

TEST_CASE("encode omits the tensors key when a message has no tensors") {
  message m = make_ack({"r1", 7});
  m.header["tensors"] = json::array({1}); // stale, must not reach the wire
  auto frames = encode(m);
  REQUIRE(frames.size() == 3);
  CHECK_FALSE(json::parse(frames[2]).contains("tensors"));
  CHECK(encode(make_heartbeat())[2] == "{}");
}

TEST_CASE("decode returns the header without the tensor descriptors and the tensors by value") {
  auto input = i32_tensor({3, 2});
  message m{"JOB", {{"job_id", 1}}, {input}};
  auto d = wire(m);
  CHECK(d.command == "JOB");
  CHECK(d.header == json{{"job_id", 1}});
  REQUIRE(d.tensors.size() == 1);
  check_tensor_equal(d.tensors[0], input);
}

TEST_CASE("every command survives a round trip through the wire") {
  auto input = i8_tensor({2, 784});
  auto output = i8_tensor({2, 10});
  auto receipt = signed_receipt(input, output);

  SUBCASE("SUBMIT") {
    submit_request s{"alice", "req-1", model_hash, "full", 2500, 3000, input};
    auto p = parse_submit(wire(make_submit(s)));
    REQUIRE(p.ok());
    CHECK(p->client_id == "alice");
    CHECK(p->request_id == "req-1");
    CHECK(p->model == model_hash);
    CHECK(p->tier == "full");
    CHECK(p->max_price == 2500);
    CHECK(p->deadline_ms == 3000);
    check_tensor_equal(p->input, input);
  }
  SUBCASE("ACK") {
    auto p = parse_ack(wire(make_ack({"req-1", 99})));
    REQUIRE(p.ok());
    CHECK(p->request_id == "req-1");
    CHECK(p->job_id == 99);
  }
  SUBCASE("ERROR from a reply") {
    auto p = parse_error(wire(make_error(error_reply{errc::queue_full, "queue holds 10000 jobs", "req-9", 5})));
    REQUIRE(p.ok());
    CHECK(p->code == "queue_full");
    CHECK(p->reason == "queue holds 10000 jobs");
    CHECK(p->request_id == "req-9");
    CHECK(p->job_id == 5);
  }
  SUBCASE("ERROR from an error") {
    auto m = make_error(make_error(errc::unknown_model, "no such model"));
    CHECK_FALSE(m.header.contains("request_id"));
    CHECK_FALSE(m.header.contains("job_id"));
    auto p = parse_error(wire(m));
    REQUIRE(p.ok());
    CHECK(p->code == "unknown_model");
    CHECK(p->reason == "no such model");
    CHECK(p->request_id.empty());
    CHECK(p->job_id == 0);
  }
  SUBCASE("RESULT") {
    auto p = parse_result(wire(make_result({"req-1", 42, {3, 7}, output, receipt})));
    REQUIRE(p.ok());
    CHECK(p->request_id == "req-1");
    CHECK(p->job_id == 42);
    CHECK(p->classes == std::vector<std::int32_t>{3, 7});
    check_tensor_equal(p->output, output);
    check_receipt_equal(p->receipt, receipt);
    CHECK(verify::verify_receipt(p->receipt));
  }
  SUBCASE("STATUS request") {
    auto p = parse_job_query(wire(make_job_query({77})));
    REQUIRE(p.ok());
    CHECK(p->job_id == 77);
  }
  SUBCASE("STATUS reply") {
    status_reply s{77, "running", 1, {{"queued", "", 10}, {"assigned", "provider ab12", 20}}, {}};
    auto p = parse_status_reply(wire(make_status_reply(s)));
    REQUIRE(p.ok());
    CHECK(p->job_id == 77);
    CHECK(p->state == "running");
    CHECK(p->attempt == 1);
    REQUIRE(p->events.size() == 2);
    CHECK(p->events[1].state == "assigned");
    CHECK(p->events[1].detail == "provider ab12");
    CHECK(p->events[1].at_us == 20);
    CHECK_FALSE(p->result.has_value());
  }
  SUBCASE("STATUS reply with the stored result") {
    auto output = i8_tensor({1, 3});
    status_reply s{78, "SETTLED", 0, {{"EXECUTED", "", 10}}, status_result{{2}, signed_receipt(i8_tensor({1, 4}), output), output}};
    auto p = parse_status_reply(wire(make_status_reply(s)));
    REQUIRE_MESSAGE(p.ok(), (p.ok() ? "" : p.err().reason));
    REQUIRE(p->result.has_value());
    CHECK(p->result->classes == std::vector<std::int32_t>{2});
    CHECK(p->result->output.data == output.data);
    CHECK(verify::receipt_hash(p->result->receipt) == verify::receipt_hash(s.result->receipt));
    CHECK(verify::verify_receipt(p->result->receipt));
  }
  SUBCASE("HELLO") {
    auto c = sample_capabilities();
    auto p = parse_hello(wire(make_hello(c, provider_key())));
    REQUIRE_MESSAGE(p.ok(), (p.ok() ? "" : p.err().reason));
    CHECK(capabilities_json(*p) == capabilities_json(c));
  }
  SUBCASE("WELCOME") {
    auto p = parse_welcome(wire(make_welcome({500, provider_key().public_key_hex})));
    REQUIRE(p.ok());
    CHECK(p->heartbeat_ms == 500);
    CHECK(p->coordinator_key == provider_key().public_key_hex);
  }
  SUBCASE("READY") {
    auto p = parse_ready(wire(make_ready(16)));
    REQUIRE(p.ok());
    CHECK(*p == 16);
  }
  SUBCASE("HEARTBEAT") {
    auto m = wire(make_heartbeat());
    CHECK(m.command == "HEARTBEAT");
    CHECK(m.header == json::object());
  }
  SUBCASE("DISCONNECT") {
    auto m = wire(make_disconnect("shutting down"));
    CHECK(m.command == "DISCONNECT");
    CHECK(m.header["reason"] == "shutting down");
  }
  SUBCASE("JOB") {
    auto p = parse_job(wire(make_job({42, 2, model_hash, 1500, input})));
    REQUIRE(p.ok());
    CHECK(p->job_id == 42);
    CHECK(p->attempt == 2);
    CHECK(p->model == model_hash);
    CHECK(p->price == 1500);
    check_tensor_equal(p->input, input);
  }
  SUBCASE("DONE") {
    const std::vector<std::string> layers{verify::sha256_hex("l0"), verify::sha256_hex("l1")};
    auto p = parse_done(wire(make_done({42, 2, {1, 9}, output, receipt, layers})));
    REQUIRE(p.ok());
    CHECK(p->job_id == 42);
    CHECK(p->attempt == 2);
    CHECK(p->classes == std::vector<std::int32_t>{1, 9});
    CHECK(p->layer_hashes == layers);
    check_tensor_equal(p->output, output);
    check_receipt_equal(p->receipt, receipt);
  }
  SUBCASE("FAIL") {
    auto p = parse_fail(wire(make_fail({42, 2, errc::bad_model, "model file truncated"})));
    REQUIRE(p.ok());
    CHECK(p->job_id == 42);
    CHECK(p->attempt == 2);
    CHECK(p->code == "bad_model");
    CHECK(p->reason == "model file truncated");
  }
  SUBCASE("VERIFY") {
    const auto m = make_verify({42, model_hash, input});
    CHECK_FALSE(m.header.contains("receipt")); // blind
    auto p = parse_verify(wire(m));
    REQUIRE(p.ok());
    CHECK(p->job_id == 42);
    CHECK(p->model == model_hash);
    check_tensor_equal(p->input, input);
  }
  SUBCASE("VERDICT, signed") {
    const auto v = signed_verdict(42);
    auto p = parse_verdict(wire(make_verdict(v)));
    REQUIRE(p.ok());
    CHECK(p->job_id == 42);
    REQUIRE(p->verdict.has_value());
    CHECK(p->verdict->model_hash == v.verdict->model_hash);
    CHECK(p->verdict->input_hash == v.verdict->input_hash);
    CHECK(p->verdict->output_hash == v.verdict->output_hash);
    CHECK(p->verdict->trace_root == v.verdict->trace_root);
    CHECK(p->verdict->layer_hashes == v.verdict->layer_hashes);
    CHECK(p->verdict->verifier_key == provider_key().public_key_hex);
    CHECK(verify::verify_verdict(*p->verdict));
  }
  SUBCASE("VERDICT, could not run") {
    auto p = parse_verdict(wire(make_verdict({42, std::nullopt, "model failed to load"})));
    REQUIRE(p.ok());
    CHECK_FALSE(p->verdict.has_value());
    CHECK(p->reason == "model failed to load");
  }
}

TEST_CASE("a receipt converts to JSON with every field and back") {
  auto r = signed_receipt(i8_tensor({1, 4}), i8_tensor({1, 2}));
  auto j = receipt_json(r);
  CHECK(j.size() == 11);
  CHECK(j["signature"] == r.signature);
  auto p = parse_receipt_json(j);
  REQUIRE(p.ok());
  check_receipt_equal(*p, r);
  j.erase("trace_root");
  auto e = parse_receipt_json(j);
  REQUIRE_FALSE(e.ok());
  CHECK(e.err().code == errc::missing_field);
  CHECK(e.err().reason == "receipt lacks 'trace_root'");
  CHECK(parse_receipt_json(json::array()).err().code == errc::malformed_frame);
}

TEST_CASE("decode rejects fewer than three frames") {
  for (std::size_t n : {0u, 1u, 2u}) {
    CAPTURE(n);
    auto frames = valid_frames();
    frames.resize(n);
    auto e = decode_error(frames);
    CHECK(e.code == errc::malformed_frame);
    CHECK(e.reason == "expected at least 3 frames (tag, command, header), got " + std::to_string(n));
  }
}

TEST_CASE("decode rejects more frames than the limit") {
  auto frames = valid_frames();
  limits lim;
  lim.max_frames = 3;
  auto e = decode_error(frames, lim);
  CHECK(e.code == errc::oversized);
  CHECK(e.reason == "expected at most 3 frames, got 4");
}

TEST_CASE("decode rejects a protocol tag other than HACA/1") {
  auto frames = valid_frames();
  frames[0] = "HACA/2";
  auto e = decode_error(frames);
  CHECK(e.code == errc::unknown_version);
  CHECK(e.reason == "unknown protocol version 'HACA/2', this coordinator speaks HACA/1");
  frames[0] = "";
  CHECK(decode_error(frames).code == errc::unknown_version);
}

TEST_CASE("decode rejects an unknown command") {
  auto frames = valid_frames();
  frames[1] = "FOO";
  auto e = decode_error(frames);
  CHECK(e.code == errc::unknown_command);
  CHECK(e.reason == "unknown command 'FOO'");
  frames[1] = "submit"; // commands are case-sensitive
  CHECK(decode_error(frames).code == errc::unknown_command);
}

TEST_CASE("decode rejects a header that is not JSON") {
  auto frames = valid_frames();
  frames[2] = "{\"model\": ";
  auto e = decode_error(frames);
  CHECK(e.code == errc::malformed_frame);
  CHECK(e.reason.find("header is not a JSON object: ") == 0);
  frames[2] = std::string("{\"a\":\"\xff\xfe\"}"); // invalid UTF-8
  CHECK(decode_error(frames).code == errc::malformed_frame);
  frames[2] = "";
  CHECK(decode_error(frames).code == errc::malformed_frame);
}

TEST_CASE("decode rejects a JSON header that is not an object") {
  auto frames = valid_frames();
  for (const char* text : {"[1,2]", "42", "\"x\"", "null"}) {
    CAPTURE(text);
    frames[2] = text;
    auto e = decode_error(frames);
    CHECK(e.code == errc::malformed_frame);
    CHECK(e.reason.find("header is not a JSON object") == 0);
  }
}

TEST_CASE("decode rejects a header over the byte limit before parsing it") {
  auto frames = valid_frames();
  limits lim;
  lim.max_header_bytes = 16;
  auto e = decode_error(frames, lim);
  CHECK(e.code == errc::oversized);
  CHECK(e.reason == "header has " + std::to_string(frames[2].size()) + " bytes, over the 16-byte limit");
  frames[2] = std::string(100, '['); // not even JSON: the size check comes first
  CHECK(decode_error(frames, lim).code == errc::oversized);
}

TEST_CASE("decode rejects a tensor count that differs from the payload frames") {
  auto frames = valid_frames();
  auto header = json::parse(frames[2]);

  auto missing_frame = frames;
  missing_frame.pop_back();
  auto e = decode_error(missing_frame);
  CHECK(e.code == errc::malformed_frame);
  CHECK(e.reason == "header describes 1 tensors, got 0 payload frames");

  auto extra_frame = frames;
  extra_frame.push_back("abcd");
  CHECK(decode_error(extra_frame).code == errc::malformed_frame);

  auto no_descriptors = header;
  no_descriptors.erase("tensors");
  e = decode_error(with_header(frames, no_descriptors));
  CHECK(e.code == errc::malformed_frame);
  CHECK(e.reason == "header describes 0 tensors, got 1 payload frames");

  auto not_array = header;
  not_array["tensors"] = json::object();
  CHECK(decode_error(with_header(frames, not_array)).code == errc::malformed_frame);

  auto not_object = header;
  not_object["tensors"] = json::array({"i8"});
  CHECK(decode_error(with_header(frames, not_object)).code == errc::malformed_frame);
}

TEST_CASE("decode rejects an unknown dtype") {
  auto frames = valid_frames();
  auto header = json::parse(frames[2]);
  header["tensors"][0]["dtype"] = "f32";
  auto e = decode_error(with_header(frames, header));
  CHECK(e.code == errc::malformed_frame);
  CHECK(e.reason == "tensor 0 has unknown dtype 'f32' (expected i8 or i32)");
  header["tensors"][0]["dtype"] = 8;
  CHECK(decode_error(with_header(frames, header)).code == errc::malformed_frame);
  header["tensors"][0].erase("dtype");
  CHECK(decode_error(with_header(frames, header)).code == errc::missing_field);
}

TEST_CASE("decode rejects zero, negative and non-integer dimensions") {
  auto frames = valid_frames();
  auto header = json::parse(frames[2]);
  for (const json& shape : {json::parse("[1,0]"), json::parse("[-1,-4]"), json::parse("[1,4.0]"),
                            json::parse("[1,\"4\"]"), json::parse("[]"), json::parse("[1,1,1,1,1,1,1,1,4]"),
                            json::parse("\"1x4\"")}) {
    CAPTURE(shape.dump());
    header["tensors"][0]["shape"] = shape;
    auto e = decode_error(with_header(frames, header));
    CHECK(e.code == errc::malformed_frame);
  }
  header["tensors"][0]["shape"] = json::parse("[2,-2]");
  CHECK(decode_error(with_header(frames, header)).reason == "tensor 0 dimension 1 must be a positive integer, got -2");
}

TEST_CASE("decode rejects an oversized tensor from its header even when the frame is small") {
  auto frames = valid_frames();
  auto header = json::parse(frames[2]);
  header["tensors"][0]["shape"] = {1, 10'000'000};
  auto e = decode_error(with_header(frames, header));
  CHECK(e.code == errc::oversized);
  CHECK(e.reason == "tensor 0 declares 1x10000000 i8 = 10000000 bytes, over the 1048576-byte limit");

  // i32 counts four bytes an element.
  header["tensors"][0] = {{"dtype", "i32"}, {"shape", {512, 513}}};
  e = decode_error(with_header(frames, header));
  CHECK(e.code == errc::oversized);

  // Products that overflow 64 bits and dimensions past int64 are oversized, not wrapped.
  header["tensors"][0] = {{"dtype", "i8"}, {"shape", {4'000'000'000LL, 4'000'000'000LL, 4'000'000'000LL}}};
  CHECK(decode_error(with_header(frames, header)).code == errc::oversized);
  header["tensors"][0] = {{"dtype", "i8"}, {"shape", {18'446'744'073'709'551'615ULL}}};
  CHECK(decode_error(with_header(frames, header)).code == errc::oversized);
}

TEST_CASE("decode rejects a payload frame whose byte count differs from its descriptor") {
  auto frames = valid_frames();
  auto header = json::parse(frames[2]);
  header["tensors"][0]["shape"] = {1, 784};
  frames = with_header(frames, header);
  frames[3] = std::string(783, 'x');
  auto e = decode_error(frames);
  CHECK(e.code == errc::bad_input);
  CHECK(e.reason == "tensor 0 frame has 783 bytes, header declares 784");
  frames[3] = std::string(785, 'x');
  CHECK(decode_error(frames).code == errc::bad_input);
  frames[3] = std::string(784, 'x');
  CHECK(decode(frames).ok());
}

TEST_CASE("decode and the parsers never throw on mutated frames") {
  auto input = i8_tensor({1, 8});
  auto receipt = signed_receipt(input, input);
  std::vector<std::vector<std::string>> seeds = {
      encode(make_submit({"a", "r", model_hash, "none", 1, 0, input})),
      encode(make_result({"r", 1, {2}, input, receipt})),
      encode(make_hello(sample_capabilities(), provider_key())),
      encode(make_status_reply({1, "done", 0, {{"queued", "", 1}}, {}})),
  };
  std::mt19937 rng(1234);
  int decoded = 0;
  for (int round = 0; round < 3000; ++round) {
    auto frames = seeds[round % seeds.size()];
    auto& f = frames[rng() % frames.size()];
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < edits && !f.empty(); ++k) {
      switch (rng() % 3) {
      case 0: f[rng() % f.size()] = static_cast<char>(rng()); break;
      case 1: f.erase(rng() % f.size(), 1); break;
      default: f.insert(f.begin() + static_cast<std::ptrdiff_t>(rng() % f.size()), "[]{}\",:-019e"[rng() % 13]);
      }
    }
    CHECK_NOTHROW({
      auto d = decode(frames);
      if (d.ok()) {
        ++decoded;
        (void)parse_submit(*d);
        (void)parse_result(*d);
        (void)parse_hello(*d);
        (void)parse_status_reply(*d);
        (void)parse_job_query(*d);
        (void)encode(*d);
      }
    });
  }
  CHECK(decoded > 0);
}

TEST_CASE("each parser names a missing or mistyped field with its error code") {
  auto input = i8_tensor({1, 4});
  auto output = i8_tensor({1, 2});
  auto receipt = signed_receipt(input, output);

  check_fields(make_submit({"alice", "r1", model_hash, "full", 10, 5, input}), checker(parse_submit),
               {"client_id", "tier", "deadline_ms"});
  check_fields(make_deposit({"d1", model_hash, 5}), checker(parse_deposit), {"to"});
  check_fields(make_probe({4, model_hash, 2, input}), checker(parse_probe));
  check_fields(make_notice({4, "r1", "disputed", 0, "why", "rerun:4"}), checker(parse_notice), {"rerun_request_id"});
  check_fields(make_activation({4, 2, output}), checker(parse_activation));
  check_fields(make_deposited({"d1", model_hash, 5, -3, true}), checker(parse_deposited), {"to"});
  check_fields(make_ack({"r1", 3}), checker(parse_ack));
  check_fields(make_error(error_reply{"queue_full", "full", "r1", 3}), checker(parse_error), {"request_id", "job_id"});
  auto result_msg = make_result({"r1", 3, {1}, output, receipt});
  check_fields(result_msg, checker(parse_result));
  check_fields(result_msg, checker(parse_result), {}, "receipt");
  check_fields(make_job_query({3}), checker(parse_job_query));
  check_fields(make_status_reply({3, "queued", 0, {}, {}}), checker(parse_status_reply));
  auto hello_msg = make_hello(sample_capabilities(), provider_key());
  check_fields(hello_msg, checker(parse_hello));
  check_fields(hello_msg, checker(parse_hello), {}, "capabilities");
  check_fields(make_welcome({500, "k"}), checker(parse_welcome));
  check_fields(make_ready(4), checker(parse_ready));
  check_fields(make_job({3, 0, model_hash, 10, input}), checker(parse_job));
  auto done_msg = make_done({3, 0, {1}, output, receipt, {verify::sha256_hex("l0")}});
  check_fields(done_msg, checker(parse_done));
  check_fields(done_msg, checker(parse_done), {}, "receipt");
  check_fields(make_fail({3, 0, "bad_model", "x"}), checker(parse_fail));
  check_fields(make_verify({3, model_hash, input}), checker(parse_verify));
  check_fields(make_verdict({3, std::nullopt, "model failed to load"}), checker(parse_verdict), {"reason"});
  const auto verdict_msg = make_verdict(signed_verdict(3));
  check_fields(verdict_msg, checker(parse_verdict), {"reason"});
  check_fields(verdict_msg, checker(parse_verdict), {}, "verdict");
}

TEST_CASE("parse_submit reports the exact reasons for a missing model and a mistyped price") {
  auto m = make_submit({"alice", "r1", model_hash, "full", 10, 0, i8_tensor({1, 4})});
  auto missing = m;
  missing.header.erase("model");
  CHECK(parse_submit(missing).err().reason == "SUBMIT header lacks 'model'");
  auto mistyped_price = m;
  mistyped_price.header["max_price"] = "10";
  auto e = parse_submit(mistyped_price).err();
  CHECK(e.code == errc::bad_input);
  CHECK(e.reason == "SUBMIT field 'max_price' must be an integer, got string");
  mistyped_price.header["max_price"] = 10.5;
  CHECK(parse_submit(mistyped_price).err().reason == "SUBMIT field 'max_price' must be an integer, got float");
}

TEST_CASE("parse_submit checks values: hash form, tier, signs, input count and dtype") {
  auto m = make_submit({"alice", "r1", model_hash, "full", 10, 0, i8_tensor({1, 4})});
  auto expect_code = [](message bad, const char* code) {
    auto p = parse_submit(bad);
    REQUIRE_FALSE(p.ok());
    CHECK(p.err().code == code);
    return p.err().reason;
  };
  auto bad = m;
  bad.header["model"] = "abc";
  expect_code(bad, errc::bad_input);
  bad.header["model"] = verify::sha256_hex("x").substr(0, 63) + "A";
  expect_code(bad, errc::bad_input);
  bad = m;
  bad.header["tier"] = "gold";
  CHECK(expect_code(bad, errc::bad_input) == "SUBMIT field 'tier' must be one of none|sampled|full, got \"gold\"");
  bad = m;
  bad.header["max_price"] = -1;
  CHECK(expect_code(bad, errc::bad_input) == "SUBMIT field 'max_price' must be >= 0, got -1");
  bad = m;
  bad.header["deadline_ms"] = -5;
  expect_code(bad, errc::bad_input);
  bad = m;
  bad.header["max_price"] = 18'446'744'073'709'551'615ULL;
  expect_code(bad, errc::bad_input);
  bad = m;
  bad.tensors.clear();
  CHECK(expect_code(bad, errc::malformed_frame) == "SUBMIT carries 1 tensor (the input), got 0");
  bad = m;
  bad.tensors.push_back(bad.tensors[0]);
  expect_code(bad, errc::malformed_frame);
  bad = m;
  bad.tensors[0] = i32_tensor({1, 4});
  CHECK(expect_code(bad, errc::bad_input) == "SUBMIT input tensor must be i8, got i32");
  bad = m;
  bad.command = "JOB";
  expect_code(bad, errc::malformed_frame);

  auto defaults = m;
  defaults.header.erase("tier");
  defaults.header.erase("deadline_ms");
  auto p = parse_submit(defaults);
  REQUIRE(p.ok());
  CHECK(p->tier == "sampled");
  CHECK(p->deadline_ms == 0);
}

TEST_CASE("commands without tensors refuse payload frames and commands with one refuse two") {
  auto ack = make_ack({"r", 1});
  ack.tensors.push_back(i8_tensor({1}));
  CHECK(parse_ack(ack).err().code == errc::malformed_frame);
  auto done = make_done({1, 0, {}, i8_tensor({1, 2}), signed_receipt(i8_tensor({1}), i8_tensor({1, 2})), {}});
  done.tensors.clear();
  CHECK(parse_done(done).err().reason == "DONE carries 1 tensor (the output), got 0");
  auto job = make_job({1, 0, model_hash, 0, i8_tensor({1})});
  job.tensors.push_back(i8_tensor({1}));
  CHECK(parse_job(job).err().code == errc::malformed_frame);
}

TEST_CASE("ready needs a credit of at least one and welcome a positive heartbeat") {
  CHECK(parse_ready(make_ready(0)).err().code == errc::bad_input);
  CHECK(parse_ready(make_ready(-3)).err().code == errc::bad_input);
  auto big = make_ready(1);
  big.header["credit"] = 1LL << 40;
  CHECK(parse_ready(big).err().code == errc::bad_input);
  CHECK(parse_welcome(make_welcome({0, ""})).err().code == errc::bad_input);
}

TEST_CASE("hello with tampered capabilities fails with bad_signature") {
  auto m = make_hello(sample_capabilities(), provider_key());
  REQUIRE(parse_hello(m).ok());

  auto tampered = m;
  tampered.header["capabilities"]["price"] = 1;
  auto p = parse_hello(wire(tampered));
  REQUIRE_FALSE(p.ok());
  CHECK(p.err().code == errc::bad_signature);
  CHECK(p.err().reason.find("HELLO signature does not verify against public key " +
                            provider_key().public_key_hex.substr(0, 8) + "..") == 0);

  auto other_key = m;
  other_key.header["capabilities"]["public_key"] = verify::generate_key_pair().public_key_hex;
  CHECK(parse_hello(other_key).err().code == errc::bad_signature);

  auto bad_sig = m;
  bad_sig.header["signature"] = "zz";
  CHECK(parse_hello(bad_sig).err().code == errc::bad_signature);

  auto extra_key = m; // an unsigned extra key changes the signed bytes
  extra_key.header["capabilities"]["region"] = "eu";
  CHECK(parse_hello(extra_key).err().code == errc::bad_signature);
}

TEST_CASE("hello verifies a signed capabilities key this version does not read") {
  auto caps = capabilities_json(sample_capabilities());
  caps["region"] = "eu";
  message m{"HELLO", {{"capabilities", caps}, {"signature", verify::sign_hex(provider_key(), caps.dump())}}, {}};
  auto p = parse_hello(wire(m));
  REQUIRE_MESSAGE(p.ok(), (p.ok() ? "" : p.err().reason));
  CHECK(p->name == "gpu-box-1");
}

TEST_CASE("hello role must be provider or verifier") {
  auto c = sample_capabilities();
  c.role = "client";
  auto p = parse_hello(make_hello(c, provider_key()));
  REQUIRE_FALSE(p.ok());
  CHECK(p.err().code == errc::bad_input);
  c.role = "verifier";
  CHECK(parse_hello(make_hello(c, provider_key())).ok());
}

TEST_CASE("the signed capabilities bytes match Python's sorted compact json.dumps") {
  capabilities c;
  c.role = "provider";
  c.name = "n";
  c.public_key = "ab";
  c.device = "cpu";
  c.backends = {"cpu"};
  c.models = {};
  c.price = 5;
  c.stake = 0;
  c.memory_bytes = 1024;
  c.int8 = true;
  c.timestamp_us = 7;
  // json.dumps(c, sort_keys=True, separators=(",", ":"))
  CHECK(capabilities_json(c).dump() ==
        R"({"backends":["cpu"],"device":"cpu","int8":true,"memory_bytes":1024,"models":[],"name":"n",)"
        R"("price":5,"public_key":"ab","role":"provider","stake":0,"timestamp_us":7})");
}

TEST_CASE("a signed verdict's hashes, layer count and job are checked at decode") {
  auto bad = make_verdict(signed_verdict(3));
  bad.header["verdict"]["output_hash"] = "xyz";
  CHECK(parse_verdict(bad).err().reason.find("VERDICT field 'verdict.output_hash' must be 64 lowercase hex") == 0);
  auto bad_layer = make_verdict(signed_verdict(3));
  bad_layer.header["verdict"]["layer_hashes"][0] = "nothex";
  CHECK(parse_verdict(bad_layer).err().reason.find("VERDICT field 'verdict.layer_hashes[0]'") == 0);
  auto many = make_verdict(signed_verdict(3));
  many.header["verdict"]["layer_hashes"] = std::vector<std::string>(max_layer_hashes + 1, model_hash);
  CHECK(parse_verdict(many).err().reason.find("VERDICT field 'verdict.layer_hashes' has 4097 entries") == 0);
  auto other_job = make_verdict(signed_verdict(3));
  other_job.header["job_id"] = 4;
  CHECK(parse_verdict(other_job).err().code == errc::bad_input);
  auto not_object = make_verdict(signed_verdict(3));
  not_object.header["verdict"] = "yes";
  CHECK(parse_verdict(not_object).err().reason == "VERDICT field 'verdict' must be an object or null, got string");
}

// ---------------------------------------------------------------- hostile field values

namespace {

const message& valid_submit() {
  static const message m = make_submit({"alice", "r1", model_hash, "full", 10, 5, i8_tensor({1, 4})});
  return m;
}

// One value of each JSON type, named as a reason names it.
const std::vector<std::pair<std::string, json>>& every_json_type() {
  static const std::vector<std::pair<std::string, json>> v = {
      {"null", nullptr},
      {"boolean", true},
      {"integer", 7},
      {"float", 7.5},
      {"string", "seven"},
      {"array", json::array({"r1"})},
      {"object", json{{"request_id", "r1"}}},
  };
  return v;
}

// parse_submit after a trip through the wire (the codec must pass any field value through).
result<submit_request> submit_through_wire(const message& m) { return parse_submit(wire(m)); }

std::string id_reason(const std::string& field, const std::string& got) {
  return "SUBMIT field '" + field +
         "' must be 1 to 128 printable ASCII characters (0x21-0x7E: no space, control or non-ASCII byte), got " + got;
}

} // namespace

TEST_CASE("every JSON type in every SUBMIT field other than the field's own is refused as bad_input naming the field") {
  struct field_rule {
    std::string name;
    std::string type;       // the JSON type the field takes
    bool any_value_of_type; // false: "seven" / 7 is still refused (a hash, an enumeration)
  };
  const std::vector<field_rule> fields = {
      {"client_id", "string", true}, {"request_id", "string", true}, {"model", "string", false},
      {"tier", "string", false},     {"max_price", "integer", true}, {"deadline_ms", "integer", true},
  };
  REQUIRE(valid_submit().header.size() == fields.size()); // every field of SUBMIT is tried
  for (const auto& f : fields) {
    for (const auto& [type, value] : every_json_type()) {
      CAPTURE(f.name);
      CAPTURE(type);
      auto m = valid_submit();
      m.header[f.name] = value;
      auto p = submit_through_wire(m);
      if (type == f.type && f.any_value_of_type) {
        CHECK(p.ok());
        continue;
      }
      REQUIRE_FALSE(p.ok());
      CHECK(p.err().code == errc::bad_input);
      CHECK(p.err().reason.find("SUBMIT field '" + f.name + "' must be ") == 0);
      if (type != f.type)
        CHECK(p.err().reason == "SUBMIT field '" + f.name + "' must be " +
                                    (f.type == "string" ? "a string" : "an integer") + ", got " + type);
      // The ERROR answering it carries the request id exactly when that one is valid.
      auto reply = make_error(p.err(), request_id_of(m));
      CHECK(reply.header.contains("request_id") == (f.name != "request_id" || type == "string"));
    }
  }
}

TEST_CASE("a SUBMIT field set to null is a wrong type (bad_input), not a missing field") {
  auto m = valid_submit();
  m.header["model"] = nullptr;
  auto p = parse_submit(m);
  REQUIRE_FALSE(p.ok());
  CHECK(p.err().code == errc::bad_input);
  CHECK(p.err().reason == "SUBMIT field 'model' must be a string, got null");
  m.header.erase("model");
  CHECK(parse_submit(m).err().code == errc::missing_field);
}

TEST_CASE("integer SUBMIT fields refuse floats, negatives and values past int64 as bad_input") {
  for (const char* field : {"max_price", "deadline_ms"}) {
    for (const json& v : {json(10.0), json(-1), json(-9'223'372'036'854'775'807LL - 1), json(9'223'372'036'854'775'808ULL),
                          json(1e300)}) {
      CAPTURE(field);
      CAPTURE(v.dump());
      auto m = valid_submit();
      m.header[field] = v;
      auto p = submit_through_wire(m);
      REQUIRE_FALSE(p.ok());
      CHECK(p.err().code == errc::bad_input);
      CHECK(p.err().reason.find(std::string("SUBMIT field '") + field + "'") == 0);
    }
  }
  auto m = valid_submit();
  m.header["max_price"] = 9'223'372'036'854'775'807LL; // int64 max is in range
  CHECK(submit_through_wire(m).ok());
}

TEST_CASE("client_id and request_id must be 1 to 128 printable ASCII bytes, otherwise bad_input saying why") {
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"", "an empty string"},
      {std::string(129, 'a'), "129 bytes"},
      {std::string(4096, 'a'), "4096 bytes"},
      {std::string("r\0" "1", 3), "byte 0x00 (NUL) at offset 1"},
      {std::string(1, '\0'), "byte 0x00 (NUL) at offset 0"},
      {"r 1", "byte 0x20 (space) at offset 1"},
      {" r1", "byte 0x20 (space) at offset 0"},
      {"r1\n", "byte 0x0a (a control character) at offset 2"},
      {"\tr1", "byte 0x09 (a control character) at offset 0"},
      {"r\x1b[31m", "byte 0x1b (a control character) at offset 1"},
      {"r\x7f", "byte 0x7f (a control character) at offset 1"},
      {"caf\xc3\xa9", "byte 0xc3 (not ASCII) at offset 3"},                 // valid UTF-8, not ASCII
      {"\xe2\x80\xae" "1r", "byte 0xe2 (not ASCII) at offset 0"},          // right-to-left override
  };
  for (const char* field : {"client_id", "request_id"}) {
    for (const auto& [value, got] : bad) {
      CAPTURE(field);
      CAPTURE(json(value).dump(-1, ' ', true).substr(0, 60));
      auto m = valid_submit();
      m.header[field] = value;
      auto p = submit_through_wire(m);
      REQUIRE_FALSE(p.ok());
      CHECK(p.err().code == errc::bad_input);
      CHECK(p.err().reason == id_reason(field, got));
    }
    for (const std::string& good : {std::string("!"), std::string(128, '~'), std::string("a-b_c.d:e/f@g#1"),
                                   std::string("{\"x\"}'--;"), std::string(128, 'z')}) {
      CAPTURE(field);
      CAPTURE(good);
      auto m = valid_submit();
      m.header[field] = good;
      auto p = submit_through_wire(m);
      REQUIRE_MESSAGE(p.ok(), (p.ok() ? std::string() : p.err().reason));
      CHECK((std::string(field) == "client_id" ? p->client_id : p->request_id) == good);
    }
  }
}

TEST_CASE("check_id accepts exactly the bytes 0x21 to 0x7E and 1 to 128 of them") {
  for (int c = 0; c < 256; ++c) {
    CAPTURE(c);
    const std::string s(1, static_cast<char>(c));
    CHECK(is_id(s) == (c >= 0x21 && c <= 0x7e));
    CHECK(check_id(s).ok() == is_id(s));
  }
  CHECK_FALSE(is_id(""));
  CHECK(is_id(std::string(128, 'x')));
  CHECK_FALSE(is_id(std::string(129, 'x')));
  auto e = check_id("", "HELLO field 'capabilities.name'");
  REQUIRE_FALSE(e.ok());
  CHECK(e.err().code == errc::bad_input);
  CHECK(e.err().reason.find("HELLO field 'capabilities.name' must be 1 to 128 printable ASCII characters") == 0);
}

TEST_CASE("a node's name, device and backend names follow the id rule even when signed") {
  auto refused = [](capabilities c, const std::string& field) {
    CAPTURE(field);
    auto p = parse_hello(wire(make_hello(c, provider_key())));
    REQUIRE_FALSE(p.ok());
    CHECK(p.err().code == errc::bad_input);
    CHECK(p.err().reason.find("HELLO field '" + field + "' must be 1 to 128 printable ASCII characters") == 0);
  };
  auto c = sample_capabilities();
  c.name = "gpu box";
  refused(c, "capabilities.name");
  c.name = std::string("gpu\0box", 7);
  refused(c, "capabilities.name");
  c.name = std::string(129, 'n');
  refused(c, "capabilities.name");
  c.name = "";
  refused(c, "capabilities.name");
  c = sample_capabilities();
  c.device = "cu\nda";
  refused(c, "capabilities.device");
  c = sample_capabilities();
  c.backends = {"cpu", ""};
  refused(c, "capabilities.backends[1]");
  c = sample_capabilities();
  c.name = std::string(128, 'n');
  CHECK(parse_hello(wire(make_hello(c, provider_key()))).ok());
}

TEST_CASE("free-text fields take any UTF-8 up to 1024 bytes without NUL") {
  auto fail_with = [](const std::string& reason) {
    auto m = make_fail({3, 0, "bad_model", "x"});
    m.header["reason"] = reason; // as a hostile peer sends it, not through make_fail
    return parse_fail(wire(m));
  };
  CHECK(fail_with(std::string(1024, 'r')).ok());
  CHECK(fail_with("").ok());
  CHECK(fail_with("mod\xc3\xa8le manquant\n\tline two").ok());
  auto e = fail_with(std::string(1025, 'r'));
  REQUIRE_FALSE(e.ok());
  CHECK(e.err().code == errc::bad_input);
  CHECK(e.err().reason == "FAIL field 'reason' must be at most 1024 bytes without NUL, got 1025 bytes");
  e = fail_with(std::string("bad\0", 4));
  REQUIRE_FALSE(e.ok());
  CHECK(e.err().code == errc::bad_input);
  CHECK(e.err().reason == "FAIL field 'reason' must be at most 1024 bytes without NUL, got a NUL byte at offset 3");

  auto code = make_fail({3, 0, "bad_model", "x"});
  code.header["code"] = "bad model";
  CHECK(parse_fail(code).err().reason.find("FAIL field 'code' must be 1 to 128 printable ASCII") == 0);

  auto verdict = make_verdict({3, std::nullopt, ""});
  verdict.header["reason"] = std::string(2000, 'v');
  CHECK(parse_verdict(verdict).err().reason.find("VERDICT field 'reason' must be at most 1024 bytes") == 0);
  auto status_msg = make_status_reply({3, "QUEUED", 0, {{"QUEUED", "", 1}}, {}});
  status_msg.header["events"][0]["detail"] = std::string("x\0", 2);
  CHECK(parse_status_reply(status_msg).err().reason.find("STATUS field 'events[0].detail' must be at most 1024 bytes") == 0);
  auto error_msg = make_error(error_reply{"queue_full", "full", "", 0});
  error_msg.header["request_id"] = "r 1";
  CHECK(parse_error(error_msg).err().code == errc::bad_input);
}

TEST_CASE("make functions bound the free text they send so the peer's parser accepts it") {
  std::string long_utf8;
  while (long_utf8.size() < 3000) long_utf8 += "\xc3\xa9"; // é, two bytes each
  auto f = parse_fail(wire(make_fail({3, 0, "internal", long_utf8})));
  REQUIRE_MESSAGE(f.ok(), (f.ok() ? std::string() : f.err().reason));
  CHECK(f->reason.size() == 1024);
  CHECK(f->reason == long_utf8.substr(0, 1024));

  std::string odd = "x" + long_utf8; // the 1024th byte starts a character: it is dropped whole
  auto b = bounded_text(odd);
  CHECK(b.size() == 1023);
  CHECK(odd.compare(0, b.size(), b) == 0);

  auto e = parse_error(wire(make_error(error_reply{"internal", std::string("a\0b", 3), "r1", 0})));
  REQUIRE(e.ok());
  CHECK(e->reason == "a?b");
  CHECK(bounded_text("short") == "short");
}

TEST_CASE("request_id_of returns the header's request id only when it is a valid id") {
  auto m = valid_submit();
  CHECK(request_id_of(m) == "r1");
  for (const json& bad : {json(nullptr), json(17), json(1.5), json(true), json::array({"r1"}), json{{"r", "r1"}},
                          json(""), json(std::string(129, 'r')), json(std::string("r\0" "1", 3)), json("r 1"),
                          json("caf\xc3\xa9")}) {
    CAPTURE(bad.dump());
    auto x = m;
    x.header["request_id"] = bad;
    CHECK(request_id_of(x) == "");
    // So the ERROR for it carries no request id at all.
    CHECK_FALSE(make_error(parse_submit(x).err(), request_id_of(x)).header.contains("request_id"));
  }
  auto absent = m;
  absent.header.erase("request_id");
  CHECK(request_id_of(absent) == "");
  message not_object{"SUBMIT", json::array({1}), {}};
  CHECK(request_id_of(not_object) == "");
  CHECK(request_id_of(make_ack({"r-7", 1})) == "r-7");

  // A SUBMIT refused for another field still gets its valid request id back.
  auto bad_price = m;
  bad_price.header["max_price"] = "ten";
  auto reply = parse_error(wire(make_error(parse_submit(bad_price).err(), request_id_of(bad_price))));
  REQUIRE(reply.ok());
  CHECK(reply->code == "bad_input");
  CHECK(reply->request_id == "r1");
  CHECK(reply->reason == "SUBMIT field 'max_price' must be an integer, got string");
}

} // TEST_SUITE

TEST_CASE("DEPOSIT: the account is a key and the amount is 1 to 10^15 micro-units") {
  const auto account = verify::sha256_hex("alice");
  CHECK(parse_deposit(make_deposit({"d1", account, 1})).ok());
  CHECK(parse_deposit(make_deposit({"d1", account, max_deposit})).ok());
  for (std::int64_t bad : {std::int64_t{0}, std::int64_t{-5}, max_deposit + 1}) {
    CAPTURE(bad);
    auto p = parse_deposit(make_deposit({"d1", account, bad}));
    REQUIRE_FALSE(p.ok());
    CHECK(p.err().code == errc::bad_input);
  }
  auto p = parse_deposit(make_deposit({"d1", "alice", 5}));
  REQUIRE_FALSE(p.ok());
  CHECK(p.err().reason == "DEPOSIT field 'account' must be 64 lowercase hex characters, got \"alice\"");
}
