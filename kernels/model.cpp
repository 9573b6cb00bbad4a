#include "kernels/model.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "verify/hash.hpp"
#include "verify/merkle.hpp"

namespace haca::kernels {

namespace {

using json = nlohmann::json;

constexpr const char* format_tag = "haca-int8-v1";
// Bounds that keep int32 accumulation exact (|a*b| <= 2^14, k < 2^17) and allocations sane.
constexpr std::int64_t max_dim = 65536;
constexpr std::int64_t max_layers = 1024;

error bad(std::string reason) { return make_error(errc::bad_model, std::move(reason)); }

void put_u64le(std::string& out, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

std::uint64_t get_u64le(std::string_view s) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(s[static_cast<std::size_t>(i)]);
  return v;
}

void put_i32le(std::string& out, std::int32_t v) {
  const auto u = static_cast<std::uint32_t>(v);
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((u >> (8 * i)) & 0xff));
}

std::int32_t get_i32le(const char* p) {
  std::uint32_t u = 0;
  for (int i = 3; i >= 0; --i) u = (u << 8) | static_cast<unsigned char>(p[i]);
  return static_cast<std::int32_t>(u);
}

struct tensor_entry {
  std::string name;
  std::string dtype; // "I8" / "I32"
  std::vector<std::int64_t> shape;
  std::uint64_t begin = 0, end = 0;
};

std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// A metadata value stored as a decimal string (safetensors metadata is string -> string).
bool meta_int(const json& meta, const char* key, std::int64_t& out) {
  auto it = meta.find(key);
  if (it == meta.end() || !it->is_string()) return false;
  const std::string& s = it->get_ref<const std::string&>();
  if (s.empty() || s.size() > 9) return false;
  std::int64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  out = v;
  return true;
}

result<model> parse_model(std::string_view bytes) {
  if (bytes.size() < 8)
    return bad("bad header length: file has " + std::to_string(bytes.size()) + " bytes, fewer than the 8-byte length prefix");
  const std::uint64_t header_len = get_u64le(bytes);
  if (header_len < 2 || header_len > bytes.size() - 8)
    return bad("bad header length: prefix says " + std::to_string(header_len) + " bytes but the file has " +
               std::to_string(bytes.size() - 8) + " after the prefix");
  const std::string_view header_text = bytes.substr(8, header_len);
  const std::string_view data = bytes.substr(8 + header_len);

  json header = json::parse(header_text.begin(), header_text.end(), nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded()) return bad("bad JSON: the header is not valid JSON");
  if (!header.is_object()) return bad("bad JSON: the header is not a JSON object");

  auto meta_it = header.find("__metadata__");
  if (meta_it == header.end() || !meta_it->is_object()) return bad("missing __metadata__ object in the header");
  const json& meta = *meta_it;
  auto fmt = meta.find("format");
  if (fmt == meta.end() || !fmt->is_string() || fmt->get_ref<const std::string&>() != format_tag)
    return bad(std::string("wrong format: __metadata__.format must be \"") + format_tag + "\"");
  auto arch = meta.find("arch");
  if (arch == meta.end() || !arch->is_string() || arch->get_ref<const std::string&>() != "mlp")
    return bad("unsupported arch: __metadata__.arch must be \"mlp\"");
  std::int64_t layer_count = 0, input_dim = 0;
  if (!meta_int(meta, "layers", layer_count) || layer_count < 1 || layer_count > max_layers)
    return bad("__metadata__.layers must be a decimal string between 1 and " + std::to_string(max_layers));
  if (!meta_int(meta, "input_dim", input_dim) || input_dim < 1 || input_dim > max_dim)
    return bad("__metadata__.input_dim must be a decimal string between 1 and " + std::to_string(max_dim));
  model m;
  if (auto nm = meta.find("name"); nm != meta.end()) {
    if (!nm->is_string()) return bad("__metadata__.name must be a string");
    m.name = nm->get<std::string>();
  }

  std::map<std::string, tensor_entry> entries;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    const std::string& name = it.key();
    const json& v = it.value();
    if (!v.is_object()) return bad("tensor '" + name + "' is not a JSON object");
    tensor_entry e;
    e.name = name;
    auto dt = v.find("dtype");
    if (dt == v.end() || !dt->is_string()) return bad("tensor '" + name + "' has no dtype");
    e.dtype = dt->get<std::string>();
    if (e.dtype != "I8" && e.dtype != "I32")
      return bad("unknown dtype '" + e.dtype + "' for tensor '" + name + "' (expected I8 or I32)");
    auto sh = v.find("shape");
    if (sh == v.end() || !sh->is_array() || sh->size() > 4) return bad("tensor '" + name + "' has no valid shape");
    for (const auto& d : *sh) {
      if (!d.is_number_integer() || d.get<std::int64_t>() < 0 || d.get<std::int64_t>() > max_dim)
        return bad("tensor '" + name + "' has a shape dimension that is not an integer in [0, " +
                   std::to_string(max_dim) + "]");
      e.shape.push_back(d.get<std::int64_t>());
    }
    auto off = v.find("data_offsets");
    if (off == v.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
        !(*off)[1].is_number_unsigned())
      return bad("tensor '" + name + "' has no valid data_offsets [begin, end]");
    e.begin = (*off)[0].get<std::uint64_t>();
    e.end = (*off)[1].get<std::uint64_t>();
    if (e.begin > e.end || e.end > data.size())
      return bad("data offsets out of range for tensor '" + name + "': [" + std::to_string(e.begin) + ", " +
                 std::to_string(e.end) + ") in a data section of " + std::to_string(data.size()) + " bytes");
    std::uint64_t count = 1; // saturates past the data size, so it cannot overflow
    for (auto d : e.shape) count = count > data.size() ? count : count * static_cast<std::uint64_t>(d);
    const std::uint64_t want = count * (e.dtype == "I8" ? 1u : 4u);
    if (e.end - e.begin != want)
      return bad("tensor '" + name + "' spans " + std::to_string(e.end - e.begin) + " bytes but " + e.dtype + " " +
                 shape_text(e.shape) + " needs " + std::to_string(want));
    entries.emplace(name, std::move(e));
  }

  // No two tensors may share bytes.
  std::vector<const tensor_entry*> by_offset;
  for (const auto& [_, e] : entries)
    if (e.end > e.begin) by_offset.push_back(&e);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const tensor_entry* a, const tensor_entry* b) { return a->begin < b->begin; });
  for (std::size_t i = 1; i < by_offset.size(); ++i)
    if (by_offset[i]->begin < by_offset[i - 1]->end)
      return bad("overlapping tensors: '" + by_offset[i - 1]->name + "' and '" + by_offset[i]->name + "'");

  std::size_t expected_entries = 0;
  for (std::int64_t i = 0; i < layer_count; ++i) {
    const std::string prefix = "layers." + std::to_string(i) + ".";
    auto find = [&](const char* what, const char* dtype) -> result<const tensor_entry*> {
      auto it = entries.find(prefix + what);
      if (it == entries.end()) return bad("missing tensor '" + prefix + what + "'");
      if (it->second.dtype != dtype)
        return bad("tensor '" + prefix + what + "' has dtype " + it->second.dtype + ", expected " + dtype);
      return &it->second;
    };
    auto w = find("weight", "I8");
    if (!w) return w.err();
    auto b = find("bias", "I32");
    if (!b) return b.err();
    auto rq = find("requant", "I32");
    if (!rq) return rq.err();
    expected_entries += 3;
    const auto& ws = (*w)->shape;
    if (ws.size() != 2 || ws[0] < 1 || ws[1] < 1)
      return bad("tensor '" + prefix + "weight' must have shape [out, in] with out, in >= 1, got " + shape_text(ws));
    dense_layer L;
    L.out = static_cast<int>(ws[0]);
    L.in = static_cast<int>(ws[1]);
    if ((*b)->shape != std::vector<std::int64_t>{ws[0]})
      return bad("tensor '" + prefix + "bias' has shape " + shape_text((*b)->shape) + ", expected [" +
                 std::to_string(L.out) + "]");
    if ((*rq)->shape != std::vector<std::int64_t>{3})
      return bad("tensor '" + prefix + "requant' has shape " + shape_text((*rq)->shape) + ", expected [3]");
    const std::int64_t prev_out = i == 0 ? input_dim : m.layers.back().out;
    if (L.in != prev_out)
      return bad("layer dims do not chain: layer " + std::to_string(i) + " takes " + std::to_string(L.in) +
                 " inputs but " + (i == 0 ? std::string("input_dim is ") : "layer " + std::to_string(i - 1) + " gives ") +
                 std::to_string(prev_out));
    const char* wp = data.data() + (*w)->begin;
    L.weight.resize(static_cast<std::size_t>(L.out) * static_cast<std::size_t>(L.in));
    std::memcpy(L.weight.data(), wp, L.weight.size());
    const char* bp = data.data() + (*b)->begin;
    L.bias.resize(static_cast<std::size_t>(L.out));
    for (std::size_t k = 0; k < L.bias.size(); ++k) L.bias[k] = get_i32le(bp + 4 * k);
    const char* rp = data.data() + (*rq)->begin;
    const std::int32_t mult = get_i32le(rp), shift = get_i32le(rp + 4), relu = get_i32le(rp + 8);
    if (mult < (std::int32_t{1} << 30))
      return bad("layer " + std::to_string(i) + " multiplier " + std::to_string(mult) + " is outside [2^30, 2^31)");
    if (shift < 0 || shift > 31)
      return bad("layer " + std::to_string(i) + " shift " + std::to_string(shift) + " is outside [0, 31]");
    if (relu != 0 && relu != 1)
      return bad("layer " + std::to_string(i) + " relu flag " + std::to_string(relu) + " is not 0 or 1");
    L.multiplier = mult;
    L.shift = shift;
    L.relu = relu == 1;
    m.layers.push_back(std::move(L));
  }
  if (entries.size() != expected_entries) {
    for (const auto& [name, _] : entries) {
      bool known = false;
      for (std::int64_t i = 0; i < layer_count && !known; ++i) {
        const std::string prefix = "layers." + std::to_string(i) + ".";
        known = name == prefix + "weight" || name == prefix + "bias" || name == prefix + "requant";
      }
      if (!known)
        return bad("unexpected tensor '" + name + "' (the model has " + std::to_string(layer_count) + " layers)");
    }
  }
  return m;
}

std::uint64_t splitmix64(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

} // namespace

result<model> load_model(std::string_view file_bytes, std::string_view expected_hash) {
  try {
    const std::string actual = verify::sha256_hex(file_bytes);
    if (!expected_hash.empty() && actual != expected_hash)
      return bad("hash mismatch: expected " + std::string(expected_hash) + ", the file hashes to " + actual);
    auto m = parse_model(file_bytes);
    if (!m) return m;
    m->hash = actual;
    return m;
  } catch (const std::exception& e) {
    return bad(std::string("cannot load model: ") + e.what());
  }
}

result<model> load_model_file(const std::string& path) {
  try {
    std::ifstream in(path, std::ios::binary);
    if (!in) return make_error(errc::io_error, "cannot open model file " + path);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (in.bad()) return make_error(errc::io_error, "cannot read model file " + path);
    auto m = load_model(bytes);
    if (!m) return make_error(errc::bad_model, path + ": " + m.err().reason);
    return m;
  } catch (const std::exception& e) {
    return make_error(errc::io_error, "cannot read model file " + path + ": " + e.what());
  }
}

std::string save_model(const model& m) {
  json header = json::object();
  header["__metadata__"] = {{"format", format_tag},
                            {"arch", "mlp"},
                            {"name", m.name},
                            {"layers", std::to_string(m.layers.size())},
                            {"input_dim", std::to_string(m.input_dim())}};
  std::string data;
  auto add = [&](const std::string& name, const char* dtype, std::vector<std::int64_t> shape, const std::string& bytes) {
    const std::uint64_t b = data.size();
    data += bytes;
    header[name] = {{"dtype", dtype}, {"shape", shape}, {"data_offsets", {b, static_cast<std::uint64_t>(data.size())}}};
  };
  for (std::size_t i = 0; i < m.layers.size(); ++i) {
    const auto& L = m.layers[i];
    const std::string prefix = "layers." + std::to_string(i) + ".";
    add(prefix + "weight", "I8", {L.out, L.in},
        std::string(reinterpret_cast<const char*>(L.weight.data()), L.weight.size()));
    std::string bias;
    for (auto v : L.bias) put_i32le(bias, v);
    add(prefix + "bias", "I32", {L.out}, bias);
    std::string rq;
    put_i32le(rq, L.multiplier);
    put_i32le(rq, L.shift);
    put_i32le(rq, L.relu ? 1 : 0);
    add(prefix + "requant", "I32", {3}, rq);
  }
  std::string text = header.dump(); // keys sorted: the same model gives the same bytes
  while ((8 + text.size()) % 8 != 0) text.push_back(' '); // safetensors pads the header to 8 bytes
  std::string out;
  out.reserve(8 + text.size() + data.size());
  put_u64le(out, text.size());
  out += text;
  out += data;
  return out;
}

model generate_mlp(std::uint64_t seed, const std::vector<int>& dims, const std::string& name) {
  model m;
  m.name = name;
  std::uint64_t state = seed;
  // Mean square of the layer's input: uniform int8 for the first, ReLU'd activations after.
  double input_ms = 128.0 * 128.0 / 3.0;
  constexpr double target_rms = 40.0; // pre-activation spread in int8 units: varied, rarely saturating
  for (std::size_t i = 0; i + 1 < dims.size(); ++i) {
    dense_layer L;
    L.in = dims[i];
    L.out = dims[i + 1];
    L.relu = i + 2 < dims.size();
    L.weight.resize(static_cast<std::size_t>(L.in) * static_cast<std::size_t>(L.out));
    for (auto& w : L.weight) w = static_cast<std::int8_t>(static_cast<int>(splitmix64(state) % 255) - 127);
    const double weight_ms = 127.0 * 128.0 / 3.0; // uniform in [-127, 127]
    const double acc_rms = std::sqrt(static_cast<double>(L.in) * weight_ms * input_ms);
    const auto bias_span = static_cast<std::uint64_t>(acc_rms / 4.0) + 1;
    L.bias.resize(static_cast<std::size_t>(L.out));
    for (auto& b : L.bias)
      b = static_cast<std::int32_t>(static_cast<std::int64_t>(splitmix64(state) % (2 * bias_span + 1)) -
                                    static_cast<std::int64_t>(bias_span));
    quantize_multiplier(target_rms / acc_rms, L.multiplier, L.shift);
    input_ms = target_rms * target_rms / 2.0; // ReLU keeps half of a zero-mean spread
    m.layers.push_back(std::move(L));
  }
  m.hash = verify::sha256_hex(save_model(m));
  return m;
}

result<inference> run_model(const model& m, const tensor& input, const backend& be, int max_rows) {
  try {
    if (m.layers.empty()) return make_error(errc::bad_model, "model " + m.hash + " has no layers");
    for (std::size_t i = 0; i < m.layers.size(); ++i) {
      const auto& L = m.layers[i];
      const bool chains = i == 0 || L.in == m.layers[i - 1].out;
      if (L.in < 1 || L.out < 1 || !chains || L.weight.size() != static_cast<std::size_t>(L.in) * L.out ||
          L.bias.size() != static_cast<std::size_t>(L.out))
        return make_error(errc::bad_model, "model " + m.hash + " layer " + std::to_string(i) +
                                               " has inconsistent dims or tensor sizes");
    }
    const int in_dim = m.input_dim();
    const bool shape_ok = input.shape.size() == 2 && input.shape[1] == in_dim;
    const bool rows_ok = shape_ok && input.shape[0] >= 1 && input.shape[0] <= max_rows;
    if (input.type != dtype::i8 || !rows_ok) {
      std::string reason = "expected i8 [rows, " + std::to_string(in_dim) + "]";
      if (input.type == dtype::i8 && shape_ok) reason += " with 1 <= rows <= " + std::to_string(max_rows);
      reason += ", got " + std::string(dtype_name(input.type)) + " [" + shape_string(input.shape) + "]";
      return make_error(errc::bad_input, reason);
    }
    const int rows = static_cast<int>(input.shape[0]);
    const std::size_t want = static_cast<std::size_t>(rows) * static_cast<std::size_t>(in_dim);
    if (input.data.size() != want)
      return make_error(errc::bad_input, "input i8 [" + shape_string(input.shape) + "] needs " + std::to_string(want) +
                                             " bytes, got " + std::to_string(input.data.size()));

    inference r;
    std::string act = input.data;
    std::vector<std::int32_t> acc;
    for (const auto& L : m.layers) {
      acc.assign(static_cast<std::size_t>(rows) * static_cast<std::size_t>(L.out), 0);
      std::string out(acc.size(), '\0');
      be.gemm_s8s8s32(reinterpret_cast<const std::int8_t*>(act.data()), L.weight.data(), acc.data(), rows, L.out, L.in);
      be.bias_requant(acc.data(), L.bias.data(), reinterpret_cast<std::int8_t*>(out.data()), rows, L.out, L.multiplier,
                      L.shift, L.relu);
      r.layer_hashes.push_back(verify::sha256_hex(out));
      act = std::move(out);
    }
    r.output.type = dtype::i8;
    r.output.shape = {rows, m.output_dim()};
    r.output.data = std::move(act);
    r.classes.resize(static_cast<std::size_t>(rows));
    argmax_rows(r.output.i8(), rows, m.output_dim(), r.classes.data());
    r.trace_root = verify::merkle_root(r.layer_hashes);
    r.output_hash = verify::sha256_hex(r.output.data);
    return r;
  } catch (const std::exception& e) {
    return make_error(errc::internal, std::string("inference failed: ") + e.what());
  }
}

} // namespace haca::kernels
