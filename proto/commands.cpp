#include "proto/commands.hpp"

#include <limits>
#include <optional>

#include "verify/hash.hpp"
#include "verify/signing.hpp"

namespace haca::proto {

namespace {

using json = nlohmann::json;

constexpr std::int64_t int64_max = std::numeric_limits<std::int64_t>::max();
constexpr std::int64_t int64_min = std::numeric_limits<std::int64_t>::min();
constexpr std::int64_t int32_max = std::numeric_limits<std::int32_t>::max();

std::string type_of(const json& j) {
  if (j.is_number_float()) return "float";
  if (j.is_number()) return "integer";
  return j.type_name();
}

// A peer's value shown in a reason, cut short. dump() escapes control bytes and NUL.
std::string shown(const json& j) {
  auto s = j.dump(-1, ' ', false, json::error_handler_t::replace);
  if (s.size() > 40) s = s.substr(0, 40) + "...";
  return s;
}

std::string byte_hex(unsigned char c) {
  static constexpr char digits[] = "0123456789abcdef";
  return std::string("0x") + digits[c >> 4] + digits[c & 15];
}

std::string byte_name(unsigned char c) {
  if (c == 0) return byte_hex(c) + " (NUL)";
  if (c == ' ') return byte_hex(c) + " (space)";
  if (c < 0x20 || c == 0x7f) return byte_hex(c) + " (a control character)";
  return byte_hex(c) + " (not ASCII)";
}

// The problem with an id, or "" when it is one.
std::string id_problem(std::string_view s) {
  if (s.empty()) return "an empty string";
  if (s.size() > max_id_bytes) return std::to_string(s.size()) + " bytes";
  for (std::size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x21 || c > 0x7e) return "byte " + byte_name(c) + " at offset " + std::to_string(i);
  }
  return {};
}

// Reads the fields of one JSON object and keeps the first problem. After a failure every
// getter returns a default, so a parser reads all fields and checks `err` once at the end.
class reader {
public:
  // owner: "SUBMIT header" / "receipt"; context: "SUBMIT" / "receipt"; prefix for nested
  // objects: "receipt." so a reason names the full path.
  reader(const json& obj, std::string owner, std::string context, std::string prefix = {})
      : obj_(obj), owner_(std::move(owner)), context_(std::move(context)), prefix_(std::move(prefix)) {
    // A header that is not an object is a framing error (decode refuses it first); a nested
    // value that is not an object is a field of the wrong type.
    if (!obj_.is_object())
      fail(prefix_.empty() ? errc::malformed_frame : errc::bad_input,
           owner_ + (prefix_.empty() ? "" : " field '" + prefix_.substr(0, prefix_.size() - 1) + "'") +
               " must be a JSON object, got " + type_of(obj_));
  }

  std::optional<error> err;

  const json* find(const char* key, bool required = true) {
    if (err) return nullptr;
    const auto it = obj_.find(key);
    if (it == obj_.end()) {
      if (required) fail(errc::missing_field, owner_ + " lacks '" + prefix_ + key + "'");
      return nullptr;
    }
    return &*it;
  }

  // Any string; each field then applies the id, text, hash or enumeration rule to it.
  std::string str(const char* key, std::optional<std::string> fallback = std::nullopt) {
    const auto* v = find(key, !fallback);
    if (!v) return fallback.value_or("");
    if (!v->is_string()) return mistyped(key, "a string", *v), std::string();
    return v->get<std::string>();
  }

  // An id (check_id). allow_empty: an optional id whose absence is written "".
  std::string id(const char* key, std::optional<std::string> fallback = std::nullopt, bool allow_empty = false) {
    auto s = str(key, std::move(fallback));
    if (err || (allow_empty && s.empty())) return s;
    if (auto st = check_id(s, field(key)); !st) return take(st.err()), std::string();
    return s;
  }

  // Free text (check_text).
  std::string text(const char* key, std::optional<std::string> fallback = std::nullopt) {
    auto s = str(key, std::move(fallback));
    if (err) return s;
    if (auto st = check_text(s, field(key)); !st) return take(st.err()), std::string();
    return s;
  }

  // 64 lowercase hex (a SHA-256 or an Ed25519 public key); allow_empty for a value a peer
  // could not compute.
  std::string hash(const char* key, bool allow_empty = false) {
    auto s = str(key);
    if (err || (allow_empty && s.empty()) || verify::is_hash_hex(s)) return s;
    fail(errc::bad_input, field(key) + " must be 64 lowercase hex characters, got " + shown(json(s)));
    return {};
  }

  std::string one_of(const char* key, std::initializer_list<std::string_view> allowed,
                     std::optional<std::string> fallback = std::nullopt) {
    auto s = str(key, std::move(fallback));
    if (err) return s;
    for (auto a : allowed)
      if (s == a) return s;
    std::string list;
    for (auto a : allowed) list += (list.empty() ? "" : "|") + std::string(a);
    fail(errc::bad_input, field(key) + " must be one of " + list + ", got " + shown(json(s)));
    return {};
  }

  std::int64_t integer(const char* key, std::int64_t min, std::int64_t max,
                       std::optional<std::int64_t> fallback = std::nullopt) {
    const auto* v = find(key, !fallback);
    if (!v) return fallback.value_or(0);
    return checked_integer(*v, field(key), min, max);
  }

  std::int32_t int32(const char* key, std::int64_t min, std::optional<std::int64_t> fallback = std::nullopt) {
    return static_cast<std::int32_t>(integer(key, min, int32_max, fallback));
  }

  bool boolean(const char* key) {
    const auto* v = find(key);
    if (!v) return false;
    if (!v->is_boolean()) return mistyped(key, "a boolean", *v), false;
    return v->get<bool>();
  }

  enum class kind { id, hash };
  std::vector<std::string> strings(const char* key, kind k) {
    std::vector<std::string> out;
    const auto* v = find(key);
    if (!v) return out;
    if (!v->is_array()) return mistyped(key, "an array", *v), out;
    out.reserve(v->size());
    for (std::size_t i = 0; i < v->size(); ++i) {
      const auto& e = (*v)[i];
      const auto name = field(key, i);
      if (!e.is_string()) return fail(errc::bad_input, name + " must be a string, got " + type_of(e)), out;
      const auto& s = e.get_ref<const std::string&>();
      if (k == kind::hash && !verify::is_hash_hex(s))
        return fail(errc::bad_input, name + " must be 64 lowercase hex characters, got " + shown(e)), out;
      if (k == kind::id)
        if (auto st = check_id(s, name); !st) return take(st.err()), out;
      out.push_back(e.get<std::string>());
    }
    return out;
  }

  std::vector<std::int32_t> int32s(const char* key) {
    std::vector<std::int32_t> out;
    const auto* v = find(key);
    if (!v) return out;
    if (!v->is_array()) return mistyped(key, "an array", *v), out;
    out.reserve(v->size());
    for (std::size_t i = 0; i < v->size(); ++i) {
      const auto x = checked_integer((*v)[i], field(key, i), std::numeric_limits<std::int32_t>::min(), int32_max);
      if (err) return out;
      out.push_back(static_cast<std::int32_t>(x));
    }
    return out;
  }

  // A nested object or array, for a sub-reader; null (and an error) if absent or mistyped.
  const json* object(const char* key) {
    const auto* v = find(key);
    if (v && !v->is_object()) return mistyped(key, "an object", *v), nullptr;
    return v;
  }
  const json* array(const char* key) {
    const auto* v = find(key);
    if (v && !v->is_array()) return mistyped(key, "an array", *v), nullptr;
    return v;
  }

  std::string field(const char* key) const { return context_ + " field '" + prefix_ + key + "'"; }
  std::string field(const char* key, std::size_t i) const {
    return context_ + " field '" + prefix_ + key + "[" + std::to_string(i) + "]'";
  }

  void fail(const char* code, std::string reason) {
    if (!err) err = error{code, std::move(reason)};
  }
  void take(const std::optional<error>& e) {
    if (e && !err) err = e;
  }
  void take(const error& e) {
    if (!err) err = e;
  }

private:
  void mistyped(const char* key, const char* expected, const json& got) {
    fail(errc::bad_input, field(key) + " must be " + expected + ", got " + type_of(got));
  }

  std::int64_t checked_integer(const json& v, const std::string& name, std::int64_t min, std::int64_t max) {
    if (err) return 0;
    if (!v.is_number_integer()) return fail(errc::bad_input, name + " must be an integer, got " + type_of(v)), 0;
    const bool too_big = v.is_number_unsigned() && v.get<std::uint64_t>() > static_cast<std::uint64_t>(max);
    const auto x = too_big ? max : v.get<std::int64_t>();
    if (too_big || x < min || x > max) {
      fail(errc::bad_input, name + " must be " +
                                (max == int64_max ? ">= " + std::to_string(min)
                                                  : "between " + std::to_string(min) + " and " + std::to_string(max)) +
                                ", got " + v.dump());
      return 0;
    }
    return x;
  }

  const json& obj_;
  std::string owner_;
  std::string context_;
  std::string prefix_;
};

reader header_reader(const message& m) {
  return reader(m.header, m.command + " header", m.command);
}

// The command and the tensor count; both are structure, not content.
std::optional<error> expect(const message& m, std::string_view command, std::size_t tensors,
                            const char* what = "") {
  if (m.command != command)
    return error{errc::malformed_frame, "expected a " + std::string(command) + " message, got " + m.command};
  if (m.tensors.size() != tensors)
    return error{errc::malformed_frame, std::string(command) + " carries " + std::to_string(tensors) + " tensor" +
                                            (tensors == 1 ? "" : "s") + what + ", got " + std::to_string(m.tensors.size())};
  return std::nullopt;
}

message with(std::string_view command, json header, std::vector<kernels::tensor> tensors = {}) {
  message m;
  m.command = std::string(command);
  m.header = std::move(header);
  m.tensors = std::move(tensors);
  return m;
}

std::string canonical(const capabilities& c) {
  // Same bytes as dump() for valid UTF-8 (what any parsed string is); replace keeps a local
  // string with invalid UTF-8 from throwing.
  return capabilities_json(c).dump(-1, ' ', false, json::error_handler_t::replace);
}

verify::receipt read_receipt(reader& r) {
  verify::receipt out;
  out.job_id = r.integer("job_id", 0, int64_max);
  out.model_hash = r.hash("model_hash");
  out.input_hash = r.hash("input_hash");
  out.output_hash = r.hash("output_hash");
  out.trace_root = r.hash("trace_root");
  out.provider_key = r.hash("provider_key");
  out.price = r.integer("price", 0, int64_max);
  out.attempt = r.int32("attempt", 0);
  out.started_at_us = r.integer("started_at_us", 0, int64_max);
  out.finished_at_us = r.integer("finished_at_us", 0, int64_max);
  out.signature = r.text("signature");
  return out;
}

// The receipt nested in a header under "receipt".
verify::receipt nested_receipt(reader& outer, const message& m) {
  const auto* j = outer.object("receipt");
  if (!j) return {};
  reader r(*j, m.command + " header", m.command, "receipt.");
  auto out = read_receipt(r);
  outer.take(r.err);
  return out;
}

} // namespace

// ---- field rules ----

status check_id(std::string_view s, std::string_view what) {
  auto problem = id_problem(s);
  if (problem.empty()) return ok_status();
  return haca::make_error(errc::bad_input, std::string(what) + " must be 1 to " + std::to_string(max_id_bytes) +
                                               " printable ASCII characters (0x21-0x7E: no space, control or "
                                               "non-ASCII byte), got " + problem);
}

bool is_id(std::string_view s) { return id_problem(s).empty(); }

status check_text(std::string_view s, std::string_view what) {
  const auto too_long = s.size() > max_text_bytes;
  const auto nul = s.find('\0');
  if (!too_long && nul == std::string_view::npos) return ok_status();
  return haca::make_error(errc::bad_input, std::string(what) + " must be at most " + std::to_string(max_text_bytes) +
                                               " bytes without NUL, got " +
                                               (too_long ? std::to_string(s.size()) + " bytes"
                                                         : "a NUL byte at offset " + std::to_string(nul)));
}

std::string bounded_text(std::string_view s) {
  if (s.size() > max_text_bytes) {
    std::size_t n = max_text_bytes;
    // Do not cut a UTF-8 character: back off over continuation bytes (10xxxxxx).
    while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xc0) == 0x80) --n;
    s = s.substr(0, n);
  }
  std::string out(s);
  for (auto& c : out)
    if (c == '\0') c = '?';
  return out;
}

std::string request_id_of(const message& m) {
  if (!m.header.is_object()) return {};
  const auto it = m.header.find("request_id");
  if (it == m.header.end() || !it->is_string()) return {};
  const auto& s = it->get_ref<const std::string&>();
  return is_id(s) ? s : std::string();
}

// ---- client side ----

message make_submit(const submit_request& s) {
  json h{{"request_id", s.request_id},
         {"model", s.model},
         {"tier", s.tier},
         {"max_price", s.max_price},
         {"deadline_ms", s.deadline_ms}};
  if (!s.client_id.empty()) h["client_id"] = s.client_id;
  return with(cmd::submit, std::move(h), {s.input});
}

result<submit_request> parse_submit(const message& m) {
  if (auto e = expect(m, cmd::submit, 1, " (the input)")) return *e;
  auto r = header_reader(m);
  submit_request s;
  if (m.header.contains("client_id")) s.client_id = r.id("client_id"); // optional, but never ""
  s.request_id = r.id("request_id");
  s.model = r.hash("model");
  s.tier = r.one_of("tier", {"none", "sampled", "full"}, std::string("sampled"));
  s.max_price = r.integer("max_price", 0, int64_max);
  s.deadline_ms = r.integer("deadline_ms", 0, max_deadline_ms, 0);
  if (r.err) return *r.err;
  if (m.tensors[0].type != kernels::dtype::i8)
    return error{errc::bad_input, "SUBMIT input tensor must be i8, got " +
                                      std::string(kernels::dtype_name(m.tensors[0].type))};
  s.input = m.tensors[0];
  return s;
}

message make_ack(const ack_reply& a) {
  return with(cmd::ack, {{"request_id", a.request_id}, {"job_id", a.job_id}});
}

result<ack_reply> parse_ack(const message& m) {
  if (auto e = expect(m, cmd::ack, 0)) return *e;
  auto r = header_reader(m);
  ack_reply a;
  a.request_id = r.id("request_id");
  a.job_id = r.integer("job_id", 0, int64_max);
  if (r.err) return *r.err;
  return a;
}

message make_error(const error_reply& e) {
  json h{{"code", e.code}, {"reason", bounded_text(e.reason)}};
  if (!e.request_id.empty()) h["request_id"] = e.request_id;
  if (e.job_id != 0) h["job_id"] = e.job_id;
  return with(cmd::error, std::move(h));
}

message make_error(const error& e, const std::string& request_id, std::int64_t job_id) {
  return make_error(error_reply{e.code, e.reason, request_id, job_id});
}

result<error_reply> parse_error(const message& m) {
  if (auto e = expect(m, cmd::error, 0)) return *e;
  auto r = header_reader(m);
  error_reply out;
  out.code = r.id("code");
  out.reason = r.text("reason");
  out.request_id = r.id("request_id", std::string(), true);
  out.job_id = r.integer("job_id", 0, int64_max, 0);
  if (r.err) return *r.err;
  return out;
}

message make_result(const job_result& res) {
  return with(cmd::result,
              {{"request_id", res.request_id},
               {"job_id", res.job_id},
               {"classes", res.classes},
               {"receipt", receipt_json(res.receipt)}},
              {res.output});
}

result<job_result> parse_result(const message& m) {
  if (auto e = expect(m, cmd::result, 1, " (the output)")) return *e;
  auto r = header_reader(m);
  job_result out;
  out.request_id = r.id("request_id");
  out.job_id = r.integer("job_id", 0, int64_max);
  out.classes = r.int32s("classes");
  out.receipt = nested_receipt(r, m);
  if (r.err) return *r.err;
  out.output = m.tensors[0];
  return out;
}

message make_job_query(const job_query& q) { return with(q.command, {{"job_id", q.job_id}}); }

result<job_query> parse_job_query(const message& m) {
  if (m.command != cmd::status && m.command != cmd::receipt && m.command != cmd::proof)
    return error{errc::malformed_frame, "expected STATUS, RECEIPT or PROOF, got " + m.command};
  if (auto e = expect(m, m.command, 0)) return *e;
  auto r = header_reader(m);
  job_query q;
  q.command = m.command;
  q.job_id = r.integer("job_id", 0, int64_max);
  if (r.err) return *r.err;
  return q;
}

message make_deposit(const deposit_request& d) {
  return with(cmd::deposit,
              {{"request_id", d.request_id}, {"account", d.account}, {"amount", d.amount}, {"to", d.to}});
}

result<deposit_request> parse_deposit(const message& m) {
  if (auto e = expect(m, cmd::deposit, 0)) return *e;
  auto r = header_reader(m);
  deposit_request d;
  d.request_id = r.id("request_id");
  d.account = r.hash("account");
  d.amount = r.integer("amount", 1, max_deposit);
  d.to = r.one_of("to", {"client", "node"}, std::string("client"));
  if (r.err) return *r.err;
  return d;
}

message make_deposited(const deposit_reply& d) {
  return with(cmd::deposited, {{"request_id", d.request_id},
                               {"account", d.account},
                               {"amount", d.amount},
                               {"balance", d.balance},
                               {"repeated", d.repeated},
                               {"to", d.to}});
}

result<deposit_reply> parse_deposited(const message& m) {
  if (auto e = expect(m, cmd::deposited, 0)) return *e;
  auto r = header_reader(m);
  deposit_reply d;
  d.request_id = r.id("request_id");
  d.account = r.hash("account");
  d.amount = r.integer("amount", 1, max_deposit);
  d.balance = r.integer("balance", int64_min, int64_max);
  d.repeated = r.boolean("repeated");
  d.to = r.one_of("to", {"client", "node"}, std::string("client"));
  if (r.err) return *r.err;
  return d;
}

message make_notice(const dispute_notice& n) {
  return with(cmd::notice, {{"job_id", n.job_id},
                            {"request_id", n.request_id},
                            {"verdict", n.verdict},
                            {"charged", n.charged},
                            {"detail", bounded_text(n.detail)},
                            {"rerun_request_id", n.rerun_request_id}});
}

result<dispute_notice> parse_notice(const message& m) {
  if (auto e = expect(m, cmd::notice, 0)) return *e;
  auto r = header_reader(m);
  dispute_notice n;
  n.job_id = r.integer("job_id", 0, int64_max);
  n.request_id = r.id("request_id");
  n.verdict = r.one_of("verdict", {"disputed"});
  n.charged = r.integer("charged", 0, int64_max);
  n.detail = r.text("detail");
  n.rerun_request_id = r.id("rerun_request_id", std::string(), true);
  if (r.err) return *r.err;
  return n;
}

message make_receipt_reply(const receipt_reply& r) {
  return with(cmd::receipt, {{"job_id", r.job_id}, {"receipt", receipt_json(r.receipt)}});
}

result<receipt_reply> parse_receipt_reply(const message& m) {
  if (auto e = expect(m, cmd::receipt, 0)) return *e;
  auto r = header_reader(m);
  receipt_reply out;
  out.job_id = r.integer("job_id", 0, int64_max);
  out.receipt = nested_receipt(r, m);
  if (r.err) return *r.err;
  return out;
}

nlohmann::json proof_json(const inclusion_proof& p) {
  json path = json::array();
  for (const auto& s : p.path)
    path.push_back({{"sibling", s.sibling}, {"sibling_on_left", s.sibling_on_left}});
  const auto& b = p.block;
  return {{"job_id", p.job_id},
          {"receipt", receipt_json(p.receipt)},
          {"verdict", p.verdict},
          {"index", p.index},
          {"path", std::move(path)},
          {"block",
           {{"height", b.height},
            {"prev_hash", b.prev_hash},
            {"batch_root", b.batch_root},
            {"receipts", b.receipts},
            {"total_amount", b.total_amount},
            {"created_at_us", b.created_at_us},
            {"signer_key", b.signer_key},
            {"signature", b.signature}}}};
}

result<inclusion_proof> parse_proof_json(const nlohmann::json& j) {
  reader r(j, "PROOF", "PROOF");
  inclusion_proof p;
  p.job_id = r.integer("job_id", 0, int64_max);
  if (const auto* rj = r.object("receipt")) {
    reader rr(*rj, "PROOF", "PROOF", "receipt.");
    p.receipt = read_receipt(rr);
    r.take(rr.err);
  }
  p.verdict = r.one_of("verdict", {"verified", "unsampled", "mismatch"});
  p.index = r.int32("index", 0);
  if (const auto* path = r.array("path")) {
    if (path->size() > 64)
      r.fail(errc::bad_input, "PROOF field 'path' has " + std::to_string(path->size()) + " steps, at most 64");
    for (std::size_t i = 0; i < path->size() && !r.err; ++i) {
      reader s((*path)[i], "PROOF", "PROOF", "path[" + std::to_string(i) + "].");
      verify::merkle_step step;
      step.sibling = s.hash("sibling");
      step.sibling_on_left = s.boolean("sibling_on_left");
      r.take(s.err);
      p.path.push_back(std::move(step));
    }
  }
  if (const auto* bj = r.object("block")) {
    reader br(*bj, "PROOF", "PROOF", "block.");
    auto& b = p.block;
    b.height = br.integer("height", 0, int64_max);
    b.prev_hash = br.hash("prev_hash");
    b.batch_root = br.hash("batch_root");
    b.receipts = br.int32("receipts", 0);
    b.total_amount = br.integer("total_amount", 0, int64_max);
    b.created_at_us = br.integer("created_at_us", 0, int64_max);
    b.signer_key = br.hash("signer_key");
    b.signature = br.text("signature");
    r.take(br.err);
  }
  if (r.err) return *r.err;
  return p;
}

message make_proof_reply(const inclusion_proof& p) { return with(cmd::proof, proof_json(p)); }

result<inclusion_proof> parse_proof_reply(const message& m) {
  if (auto e = expect(m, cmd::proof, 0)) return *e;
  return parse_proof_json(m.header);
}

message make_status_reply(const status_reply& s) {
  json events = json::array();
  for (const auto& e : s.events)
    events.push_back({{"state", e.state}, {"detail", bounded_text(e.detail)}, {"at_us", e.at_us}});
  json header{{"job_id", s.job_id}, {"state", s.state}, {"attempt", s.attempt}, {"events", std::move(events)}};
  if (!s.result)
    return with(cmd::status, std::move(header));
  header["classes"] = s.result->classes;
  header["receipt"] = receipt_json(s.result->receipt);
  return with(cmd::status, std::move(header), {s.result->output});
}

result<status_reply> parse_status_reply(const message& m) {
  const bool with_result = m.tensors.size() == 1;
  if (auto e = expect(m, cmd::status, with_result ? 1 : 0, " (the output, once the job has a result) or none"))
    return *e;
  auto r = header_reader(m);
  status_reply s;
  s.job_id = r.integer("job_id", 0, int64_max);
  s.state = r.id("state");
  s.attempt = r.int32("attempt", 0);
  if (const auto* events = r.array("events")) {
    for (std::size_t i = 0; i < events->size() && !r.err; ++i) {
      reader e((*events)[i], m.command + " header", m.command, "events[" + std::to_string(i) + "].");
      status_event ev;
      ev.state = e.id("state");
      ev.detail = e.text("detail", std::string());
      ev.at_us = e.integer("at_us", 0, int64_max);
      r.take(e.err);
      s.events.push_back(std::move(ev));
    }
  }
  if (with_result) {
    status_result res;
    res.classes = r.int32s("classes");
    res.receipt = nested_receipt(r, m);
    res.output = m.tensors[0];
    s.result = std::move(res);
  }
  if (r.err) return *r.err;
  return s;
}

// ---- node side ----

nlohmann::json capabilities_json(const capabilities& c) {
  nlohmann::json j = {{"role", c.role},
          {"name", c.name},
          {"public_key", c.public_key},
          {"device", c.device},
          {"backends", c.backends},
          {"models", c.models},
          {"price", c.price},
          {"stake", c.stake},
          {"memory_bytes", c.memory_bytes},
          {"int8", c.int8},
          {"timestamp_us", c.timestamp_us}};
  if (!c.operator_key.empty()) // optional: a HELLO without it is the same bytes as before
    j["operator_key"] = c.operator_key;
  return j;
}

message make_hello(const capabilities& c, const verify::key_pair& key) {
  capabilities signed_caps = c;
  if (signed_caps.public_key.empty()) signed_caps.public_key = key.public_key_hex;
  const auto signature = verify::sign_hex(key, canonical(signed_caps));
  return with(cmd::hello, {{"capabilities", capabilities_json(signed_caps)}, {"signature", signature}});
}

result<capabilities> parse_hello(const message& m) {
  if (auto e = expect(m, cmd::hello, 0)) return *e;
  auto r = header_reader(m);
  capabilities c;
  const auto* j = r.object("capabilities");
  if (j) {
    reader cr(*j, "HELLO header", "HELLO", "capabilities.");
    c.role = cr.one_of("role", {"provider", "verifier"});
    c.name = cr.id("name");
    c.public_key = cr.hash("public_key");
    c.device = cr.id("device");
    c.backends = cr.strings("backends", reader::kind::id);
    c.models = cr.strings("models", reader::kind::hash);
    c.price = cr.integer("price", 0, int64_max);
    c.stake = cr.integer("stake", 0, int64_max);
    c.memory_bytes = cr.integer("memory_bytes", 0, int64_max);
    c.int8 = cr.boolean("int8");
    c.timestamp_us = cr.integer("timestamp_us", 0, int64_max);
    if (cr.find("operator_key", false))
      c.operator_key = cr.hash("operator_key", true);
    r.take(cr.err);
  }
  const auto signature = r.text("signature");
  if (r.err) return *r.err;
  // The signature covers the capabilities object as it came (sorted keys, no whitespace). For
  // the fields above that is capabilities_json(c).dump(); a key this version does not read is
  // covered too, so a newer node's HELLO still verifies and nothing unsigned rides along.
  const auto signed_bytes = j->dump(-1, ' ', false, json::error_handler_t::replace);
  if (!verify::verify_signature_hex(c.public_key, signed_bytes, signature))
    return error{errc::bad_signature, "HELLO signature does not verify against public key " +
                                          c.public_key.substr(0, 8) +
                                          ".. (it must sign the capabilities JSON with sorted keys and no whitespace)"};
  return c;
}

status check_hello_bound(const capabilities& c, const std::string& connection_curve_key_hex) {
  if (!connection_curve_key_hex.empty() && verify::curve_public_hex(c.public_key) == connection_curve_key_hex)
    return ok_status();
  return haca::make_error(errc::bad_signature,
                          "HELLO names key " + c.public_key.substr(0, 12) +
                              ".. but this connection authenticated (CurveZMQ) with another key: a node says HELLO "
                              "on a connection made with its own key");
}

message make_welcome(const welcome_reply& w) {
  return with(cmd::welcome, {{"heartbeat_ms", w.heartbeat_ms}, {"coordinator_key", w.coordinator_key}});
}

result<welcome_reply> parse_welcome(const message& m) {
  if (auto e = expect(m, cmd::welcome, 0)) return *e;
  auto r = header_reader(m);
  welcome_reply w;
  w.heartbeat_ms = r.int32("heartbeat_ms", 1);
  w.coordinator_key = r.text("coordinator_key");
  if (r.err) return *r.err;
  return w;
}

message make_ready(std::int32_t credit) { return with(cmd::ready, {{"credit", credit}}); }

result<std::int32_t> parse_ready(const message& m) {
  if (auto e = expect(m, cmd::ready, 0)) return *e;
  auto r = header_reader(m);
  const auto credit = r.int32("credit", 1);
  if (r.err) return *r.err;
  return credit;
}

message make_heartbeat() { return with(cmd::heartbeat, json::object()); }

message make_disconnect(const std::string& reason) { return with(cmd::disconnect, {{"reason", bounded_text(reason)}}); }

message make_job(const job_order& j) {
  return with(cmd::job, {{"job_id", j.job_id}, {"attempt", j.attempt}, {"model", j.model}, {"price", j.price}},
              {j.input});
}

result<job_order> parse_job(const message& m) {
  if (auto e = expect(m, cmd::job, 1, " (the input)")) return *e;
  auto r = header_reader(m);
  job_order j;
  j.job_id = r.integer("job_id", 0, int64_max);
  j.attempt = r.int32("attempt", 0);
  j.model = r.hash("model");
  j.price = r.integer("price", 0, int64_max);
  if (r.err) return *r.err;
  j.input = m.tensors[0];
  return j;
}

message make_done(const job_done& d) {
  return with(cmd::done,
              {{"job_id", d.job_id},
               {"attempt", d.attempt},
               {"classes", d.classes},
               {"receipt", receipt_json(d.receipt)},
               {"layer_hashes", d.layer_hashes}},
              {d.output});
}

result<job_done> parse_done(const message& m) {
  if (auto e = expect(m, cmd::done, 1, " (the output)")) return *e;
  auto r = header_reader(m);
  job_done d;
  d.job_id = r.integer("job_id", 0, int64_max);
  d.attempt = r.int32("attempt", 0);
  d.classes = r.int32s("classes");
  d.receipt = nested_receipt(r, m);
  if (const auto* layers = r.array("layer_hashes"); layers && layers->size() > max_layer_hashes)
    r.fail(errc::bad_input, "DONE field 'layer_hashes' has " + std::to_string(layers->size()) + " entries, at most " +
                                std::to_string(max_layer_hashes));
  d.layer_hashes = r.strings("layer_hashes", reader::kind::hash);
  if (r.err) return *r.err;
  d.output = m.tensors[0];
  return d;
}

message make_fail(const job_failed& f) {
  return with(cmd::fail,
              {{"job_id", f.job_id}, {"attempt", f.attempt}, {"code", f.code}, {"reason", bounded_text(f.reason)}});
}

result<job_failed> parse_fail(const message& m) {
  if (auto e = expect(m, cmd::fail, 0)) return *e;
  auto r = header_reader(m);
  job_failed f;
  f.job_id = r.integer("job_id", 0, int64_max);
  f.attempt = r.int32("attempt", 0);
  f.code = r.id("code");
  f.reason = r.text("reason");
  if (r.err) return *r.err;
  return f;
}

message make_verify(const verify_task& v) {
  return with(cmd::verify, {{"job_id", v.job_id}, {"model", v.model}}, {v.input});
}

result<verify_task> parse_verify(const message& m) {
  if (auto e = expect(m, cmd::verify, 1, " (the input)")) return *e;
  auto r = header_reader(m);
  verify_task v;
  v.job_id = r.integer("job_id", 0, int64_max);
  v.model = r.hash("model");
  if (r.err) return *r.err;
  v.input = m.tensors[0];
  return v;
}

message make_probe(const probe_request& p) {
  return with(cmd::probe, {{"job_id", p.job_id}, {"model", p.model}, {"layer", p.layer}}, {p.input});
}

result<probe_request> parse_probe(const message& m) {
  if (auto e = expect(m, cmd::probe, 1, " (the input)")) return *e;
  auto r = header_reader(m);
  probe_request p;
  p.job_id = r.integer("job_id", 0, int64_max);
  p.model = r.hash("model");
  p.layer = r.int32("layer", 0);
  if (r.err) return *r.err;
  p.input = m.tensors[0];
  return p;
}

message make_activation(const activation_reply& a) {
  return with(cmd::activation, {{"job_id", a.job_id}, {"layer", a.layer}}, {a.activation});
}

result<activation_reply> parse_activation(const message& m) {
  if (auto e = expect(m, cmd::activation, 1, " (the activation)")) return *e;
  auto r = header_reader(m);
  activation_reply a;
  a.job_id = r.integer("job_id", 0, int64_max);
  a.layer = r.int32("layer", 0);
  if (r.err) return *r.err;
  if (m.tensors[0].type != kernels::dtype::i8 || m.tensors[0].shape.size() != 2)
    return error{errc::bad_input, "ACTIVATION tensor must be i8 [rows, width], got " +
                                      std::string(kernels::dtype_name(m.tensors[0].type)) + " [" +
                                      kernels::shape_string(m.tensors[0].shape) + "]"};
  a.activation = m.tensors[0];
  return a;
}

message make_verdict(const verdict_reply& v) {
  json signed_verdict = nullptr;
  if (v.verdict) {
    const auto& d = *v.verdict;
    signed_verdict = {{"job_id", d.job_id},          {"model_hash", d.model_hash},
                      {"input_hash", d.input_hash},  {"output_hash", d.output_hash},
                      {"trace_root", d.trace_root},  {"layer_hashes", d.layer_hashes},
                      {"verifier_key", d.verifier_key}, {"signature", d.signature}};
  }
  return with(cmd::verdict, {{"job_id", v.job_id}, {"verdict", signed_verdict}, {"reason", bounded_text(v.reason)}});
}

result<verdict_reply> parse_verdict(const message& m) {
  if (auto e = expect(m, cmd::verdict, 0)) return *e;
  auto r = header_reader(m);
  verdict_reply v;
  v.job_id = r.integer("job_id", 0, int64_max);
  v.reason = r.text("reason", std::string());
  const auto* signed_verdict = r.find("verdict");
  if (signed_verdict && !signed_verdict->is_null() && !signed_verdict->is_object())
    r.fail(errc::bad_input, r.field("verdict") + " must be an object or null, got " + type_of(*signed_verdict));
  if (r.err) return *r.err;
  if (signed_verdict->is_null())
    return v; // could not run
  reader d(*signed_verdict, "VERDICT header", "VERDICT", "verdict.");
  verify::verdict out;
  out.job_id = d.integer("job_id", 0, int64_max);
  out.model_hash = d.hash("model_hash");
  out.input_hash = d.hash("input_hash");
  out.output_hash = d.hash("output_hash");
  out.trace_root = d.hash("trace_root");
  if (const auto* layers = d.array("layer_hashes"); layers && layers->size() > max_layer_hashes)
    d.fail(errc::bad_input, "VERDICT field 'verdict.layer_hashes' has " + std::to_string(layers->size()) +
                                " entries, at most " + std::to_string(max_layer_hashes));
  out.layer_hashes = d.strings("layer_hashes", reader::kind::hash);
  out.verifier_key = d.hash("verifier_key");
  out.signature = d.text("signature");
  if (d.err) return *d.err;
  if (out.job_id != v.job_id)
    return error{errc::bad_input, "VERDICT field 'verdict.job_id' is " + std::to_string(out.job_id) +
                                      ", the message's job_id is " + std::to_string(v.job_id)};
  v.verdict = std::move(out);
  return v;
}

nlohmann::json receipt_json(const verify::receipt& rc) {
  return {{"job_id", rc.job_id},
          {"model_hash", rc.model_hash},
          {"input_hash", rc.input_hash},
          {"output_hash", rc.output_hash},
          {"trace_root", rc.trace_root},
          {"provider_key", rc.provider_key},
          {"price", rc.price},
          {"attempt", rc.attempt},
          {"started_at_us", rc.started_at_us},
          {"finished_at_us", rc.finished_at_us},
          {"signature", rc.signature}};
}

result<verify::receipt> parse_receipt_json(const nlohmann::json& j) {
  reader r(j, "receipt", "receipt");
  auto out = read_receipt(r);
  if (r.err) return *r.err;
  return out;
}

} // namespace haca::proto
