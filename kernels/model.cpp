#include "kernels/model.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <optional>
#include <sstream>

#include <nlohmann/json.hpp>

#include "kernels/cpu/cpu_isa.hpp"
#include "verify/blake3.hpp"
#include "verify/hash.hpp"
#include "verify/merkle.hpp"

namespace haca::kernels {

namespace {

using json = nlohmann::json;

constexpr const char* format_tag = "haca-int8-v2";
// Bounds that keep allocations sane: every dimension, and the values one sample holds at any
// layer (256 rows of the largest sample are 4 GiB; keep real models far below).
constexpr std::int64_t max_dim = 65536;
constexpr std::int64_t max_layers = 1024;
constexpr std::int64_t max_sample_values = std::int64_t{1} << 24;
// Products summed per output value (dense: in; conv2d: in_c * kh * kw). |a*b| <= 2^14 for int8,
// so 2^14 * 131071 < 2^31: the dot product fits int32 exactly in any order. Only acc + bias may
// wrap (mod 2^32, the same on every backend).
constexpr std::int64_t max_k = 131071;

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

const char* kind_name(layer_kind k) {
  switch (k) {
  case layer_kind::dense: return "dense";
  case layer_kind::conv2d: return "conv2d";
  case layer_kind::maxpool: return "maxpool";
  case layer_kind::flatten: return "flatten";
  }
  return "?";
}

bool has_weights(layer_kind k) { return k == layer_kind::dense || k == layer_kind::conv2d; }

std::int64_t product(const std::vector<std::int64_t>& shape) {
  std::int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

// What a layer computes, derived from the model's input_shape and the layers before it. The
// model's own shape fields are only checked against this, never trusted.
struct geometry {
  std::vector<std::int64_t> in_shape, out_shape; // per sample
  int n = 0, k = 0;                              // weighted layers: outputs and products per output
  conv2d_shape conv;
  maxpool_shape pool;
};

result<std::vector<geometry>> derive(const model& m) {
  const auto& in0 = m.input_shape;
  if (in0.empty() || in0.size() > 4)
    return bad("input_shape " + shape_text(in0) + " must have 1 to 4 dimensions");
  for (auto d : in0)
    if (d < 1 || d > max_dim)
      return bad("input_shape " + shape_text(in0) + " has a dimension outside [1, " + std::to_string(max_dim) + "]");
  if (product(in0) > max_sample_values)
    return bad("input_shape " + shape_text(in0) + " holds more than " + std::to_string(max_sample_values) + " values");
  if (m.layers.empty()) return bad("the model has no layers");
  if (static_cast<std::int64_t>(m.layers.size()) > max_layers)
    return bad("the model has " + std::to_string(m.layers.size()) + " layers, more than " + std::to_string(max_layers));

  std::vector<geometry> out;
  out.reserve(m.layers.size());
  std::vector<std::int64_t> shape = in0;
  for (std::size_t i = 0; i < m.layers.size(); ++i) {
    const layer& L = m.layers[i];
    const std::string where = "layer " + std::to_string(i) + " (" + kind_name(L.kind) + ")";
    const std::string source = i == 0 ? std::string("the input gives ") : "layer " + std::to_string(i - 1) + " gives ";
    auto in_range = [](std::int64_t v, std::int64_t lo, std::int64_t hi) { return v >= lo && v <= hi; };
    geometry g;
    g.in_shape = shape;
    if (!has_weights(L.kind) && (!L.weight.empty() || !L.bias.empty()))
      return bad(where + " has no weights, but the model carries " + std::to_string(L.weight.size()) + " weights and " +
                 std::to_string(L.bias.size()) + " biases for it");
    switch (L.kind) {
    case layer_kind::dense: {
      if (shape.size() != 1)
        return bad("layer dims do not chain: " + where + " takes a flat input but " + source + shape_text(shape) +
                   " (add a flatten layer before it)");
      if (L.in != 0 && L.in != shape[0])
        return bad("layer dims do not chain: " + where + " takes " + std::to_string(L.in) + " inputs but " + source +
                   std::to_string(shape[0]));
      if (!in_range(L.out, 1, max_dim))
        return bad(where + " has " + std::to_string(L.out) + " outputs, outside [1, " + std::to_string(max_dim) + "]");
      g.k = static_cast<int>(shape[0]);
      g.n = L.out;
      g.out_shape = {L.out};
      break;
    }
    case layer_kind::conv2d: {
      const conv2d_shape& c = L.conv;
      if (shape.size() != 3)
        return bad("layer dims do not chain: " + where + " takes a CxHxW input but " + source + shape_text(shape));
      if (c.in_c != 0 && c.in_c != shape[0])
        return bad("layer dims do not chain: " + where + " takes " + std::to_string(c.in_c) + " channels but " + source +
                   std::to_string(shape[0]));
      if (!in_range(c.out_c, 1, max_dim) || !in_range(c.kernel_h, 1, max_dim) || !in_range(c.kernel_w, 1, max_dim) ||
          !in_range(c.stride, 1, max_dim) || !in_range(c.pad, 0, max_dim))
        return bad(where + " needs out_c, kernel and stride in [1, " + std::to_string(max_dim) + "] and pad in [0, " +
                   std::to_string(max_dim) + "], got out_c " + std::to_string(c.out_c) + ", kernel " +
                   std::to_string(c.kernel_h) + "x" + std::to_string(c.kernel_w) + ", stride " + std::to_string(c.stride) +
                   ", pad " + std::to_string(c.pad));
      g.conv = c;
      g.conv.in_c = static_cast<int>(shape[0]);
      g.conv.in_h = static_cast<int>(shape[1]);
      g.conv.in_w = static_cast<int>(shape[2]);
      if (g.conv.in_h + 2 * c.pad < c.kernel_h || g.conv.in_w + 2 * c.pad < c.kernel_w)
        return bad("layer dims do not chain: " + where + " has a " + std::to_string(c.kernel_h) + "x" +
                   std::to_string(c.kernel_w) + " kernel (pad " + std::to_string(c.pad) + ") but " + source +
                   shape_text(shape));
      const std::int64_t k = static_cast<std::int64_t>(g.conv.in_c) * c.kernel_h * c.kernel_w;
      if (k > max_k)
        return bad(where + " sums " + std::to_string(k) + " products per output, more than " + std::to_string(max_k) +
                   " (int32 accumulation must not overflow)");
      g.k = static_cast<int>(k);
      g.n = c.out_c;
      g.out_shape = {c.out_c, g.conv.out_h(), g.conv.out_w()};
      break;
    }
    case layer_kind::maxpool: {
      const maxpool_shape& p = L.pool;
      if (shape.size() != 3)
        return bad("layer dims do not chain: " + where + " takes a CxHxW input but " + source + shape_text(shape));
      if (!in_range(p.kernel, 1, max_dim) || !in_range(p.stride, 1, max_dim))
        return bad(where + " needs kernel and stride in [1, " + std::to_string(max_dim) + "], got kernel " +
                   std::to_string(p.kernel) + ", stride " + std::to_string(p.stride));
      g.pool = p;
      g.pool.channels = static_cast<int>(shape[0]);
      g.pool.in_h = static_cast<int>(shape[1]);
      g.pool.in_w = static_cast<int>(shape[2]);
      if (g.pool.in_h < p.kernel || g.pool.in_w < p.kernel)
        return bad("layer dims do not chain: " + where + " has a " + std::to_string(p.kernel) + "x" +
                   std::to_string(p.kernel) + " window but " + source + shape_text(shape));
      g.out_shape = {g.pool.channels, g.pool.out_h(), g.pool.out_w()};
      break;
    }
    case layer_kind::flatten: g.out_shape = {product(shape)}; break;
    default: return bad(where + " has an unknown kind");
    }
    if (has_weights(L.kind)) {
      if (g.k > max_k)
        return bad(where + " sums " + std::to_string(g.k) + " products per output, more than " + std::to_string(max_k) +
                   " (int32 accumulation must not overflow)");
      const std::size_t want = static_cast<std::size_t>(g.n) * static_cast<std::size_t>(g.k);
      if (L.weight.size() != want)
        return bad(where + " has " + std::to_string(L.weight.size()) + " weights, expected " + std::to_string(g.n) +
                   " x " + std::to_string(g.k) + " = " + std::to_string(want));
      if (L.bias.size() != static_cast<std::size_t>(g.n))
        return bad(where + " has " + std::to_string(L.bias.size()) + " biases, expected " + std::to_string(g.n));
      if (L.rq.multiplier < (std::int32_t{1} << 30))
        return bad("layer " + std::to_string(i) + " multiplier " + std::to_string(L.rq.multiplier) +
                   " is outside [2^30, 2^31)");
      if (L.rq.shift < 0 || L.rq.shift > 31)
        return bad("layer " + std::to_string(i) + " shift " + std::to_string(L.rq.shift) + " is outside [0, 31]");
    }
    for (auto d : g.out_shape)
      if (d < 1) return bad(where + " gives an empty output " + shape_text(g.out_shape));
    if (product(g.out_shape) > max_sample_values)
      return bad(where + " gives " + shape_text(g.out_shape) + ", more than " + std::to_string(max_sample_values) +
                 " values per sample");
    shape = g.out_shape;
    out.push_back(std::move(g));
  }
  return out;
}

// A JSON integer in [lo, hi]; huge unsigned values are rejected, not wrapped.
bool json_int(const json& v, std::int64_t lo, std::int64_t hi, std::int64_t& out) {
  if (v.is_number_unsigned()) {
    const auto u = v.get<std::uint64_t>();
    if (u > static_cast<std::uint64_t>(hi)) return false;
    out = static_cast<std::int64_t>(u);
    return out >= lo;
  }
  if (!v.is_number_integer()) return false;
  out = v.get<std::int64_t>();
  return out >= lo && out <= hi;
}

// One entry of the "layers" metadata: {"kind": ..., kind-specific integers, "relu": bool}.
result<layer> parse_layer_spec(const json& spec, std::size_t i) {
  const std::string where = "layers[" + std::to_string(i) + "]";
  if (!spec.is_object()) return bad("__metadata__.layers: " + where + " is not a JSON object");
  auto kind_it = spec.find("kind");
  if (kind_it == spec.end() || !kind_it->is_string())
    return bad("__metadata__.layers: " + where + " has no \"kind\" string");
  const std::string& kind = kind_it->get_ref<const std::string&>();
  layer L;
  std::vector<std::string> allowed = {"kind"};
  auto integer = [&](const char* key, std::int64_t lo, std::int64_t hi, std::optional<std::int64_t> fallback,
                     int& out) -> status {
    allowed.emplace_back(key);
    auto it = spec.find(key);
    if (it == spec.end()) {
      if (!fallback) return bad("__metadata__.layers: " + where + " (" + kind + ") needs \"" + key + "\"");
      out = static_cast<int>(*fallback);
      return ok_status();
    }
    std::int64_t v = 0;
    if (!json_int(*it, lo, hi, v))
      return bad("__metadata__.layers: " + where + " \"" + key + "\" must be an integer in [" + std::to_string(lo) +
                 ", " + std::to_string(hi) + "]");
    out = static_cast<int>(v);
    return ok_status();
  };
  auto relu = [&]() -> status {
    allowed.emplace_back("relu");
    auto it = spec.find("relu");
    if (it == spec.end()) return ok_status();
    if (!it->is_boolean()) return bad("__metadata__.layers: " + where + " \"relu\" must be true or false");
    L.rq.relu = it->get<bool>();
    return ok_status();
  };
  status st = ok_status();
  if (kind == "dense") {
    L.kind = layer_kind::dense;
    if (!(st = integer("out", 1, max_dim, std::nullopt, L.out))) return st.err();
    if (!(st = relu())) return st.err();
  } else if (kind == "conv2d") {
    L.kind = layer_kind::conv2d;
    if (!(st = integer("out_c", 1, max_dim, std::nullopt, L.conv.out_c))) return st.err();
    if (spec.contains("kernel")) {
      if (!(st = integer("kernel", 1, max_dim, std::nullopt, L.conv.kernel_h))) return st.err();
      L.conv.kernel_w = L.conv.kernel_h;
    } else {
      if (!(st = integer("kernel_h", 1, max_dim, std::nullopt, L.conv.kernel_h))) return st.err();
      if (!(st = integer("kernel_w", 1, max_dim, std::nullopt, L.conv.kernel_w))) return st.err();
    }
    if (!(st = integer("stride", 1, max_dim, 1, L.conv.stride))) return st.err();
    if (!(st = integer("pad", 0, max_dim, 0, L.conv.pad))) return st.err();
    if (!(st = relu())) return st.err();
  } else if (kind == "maxpool") {
    L.kind = layer_kind::maxpool;
    if (!(st = integer("kernel", 1, max_dim, 2, L.pool.kernel))) return st.err();
    if (!(st = integer("stride", 1, max_dim, 2, L.pool.stride))) return st.err();
  } else if (kind == "flatten") {
    L.kind = layer_kind::flatten;
  } else {
    return bad("__metadata__.layers: " + where + " has unknown kind '" + kind +
               "' (expected dense, conv2d, maxpool or flatten)");
  }
  for (auto it = spec.begin(); it != spec.end(); ++it)
    if (std::find(allowed.begin(), allowed.end(), it.key()) == allowed.end())
      return bad("__metadata__.layers: " + where + " (" + kind + ") has unknown key '" + it.key() + "'");
  return L;
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
  for (auto it = meta.begin(); it != meta.end(); ++it)
    if (!it->is_string()) return bad("__metadata__." + it.key() + " must be a string (safetensors metadata is text)");
  auto fmt = meta.find("format");
  if (fmt == meta.end() || fmt->get_ref<const std::string&>() != format_tag)
    return bad(std::string("wrong format: __metadata__.format must be \"") + format_tag + "\"");

  model m;
  for (auto it = meta.begin(); it != meta.end(); ++it) {
    const std::string& key = it.key();
    if (key == "format" || key == "input_shape" || key == "layers") continue;
    if (key == "name")
      m.name = it->get<std::string>();
    else
      m.metadata.emplace(key, it->get<std::string>());
  }

  auto shape_it = meta.find("input_shape");
  const std::string shape_help = "__metadata__.input_shape must be a JSON array of 1 to 4 integers in [1, " +
                                 std::to_string(max_dim) + "] as text, e.g. \"[1,28,28]\"";
  if (shape_it == meta.end()) return bad(shape_help);
  {
    const std::string& text = shape_it->get_ref<const std::string&>();
    json shape = json::parse(text, nullptr, false);
    if (shape.is_discarded() || !shape.is_array() || shape.empty() || shape.size() > 4) return bad(shape_help);
    for (const auto& d : shape) {
      std::int64_t v = 0;
      if (!json_int(d, 1, max_dim, v)) return bad(shape_help);
      m.input_shape.push_back(v);
    }
  }

  auto layers_it = meta.find("layers");
  if (layers_it == meta.end())
    return bad("__metadata__.layers is missing: it must be a JSON array of layer objects as text");
  json specs = json::parse(layers_it->get_ref<const std::string&>(), nullptr, false);
  if (specs.is_discarded() || !specs.is_array() || specs.empty() ||
      static_cast<std::int64_t>(specs.size()) > max_layers)
    return bad("__metadata__.layers must be a JSON array of 1 to " + std::to_string(max_layers) + " layer objects as text");
  for (std::size_t i = 0; i < specs.size(); ++i) {
    auto L = parse_layer_spec(specs[i], i);
    if (!L) return L.err();
    m.layers.push_back(std::move(L.value()));
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
      std::int64_t dim = 0;
      if (!json_int(d, 0, max_dim, dim))
        return bad("tensor '" + name + "' has a shape dimension that is not an integer in [0, " +
                   std::to_string(max_dim) + "]");
      e.shape.push_back(dim);
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
  for (std::size_t i = 0; i < m.layers.size(); ++i) {
    layer& L = m.layers[i];
    if (!has_weights(L.kind)) continue;
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
    std::int64_t n = 0;
    if (L.kind == layer_kind::dense) {
      if (ws.size() != 2 || ws[0] != L.out || ws[1] < 1)
        return bad("tensor '" + prefix + "weight' must have shape [out, in] = [" + std::to_string(L.out) +
                   ", in >= 1], got " + shape_text(ws));
      L.in = static_cast<int>(ws[1]);
      n = L.out;
    } else {
      if (ws.size() != 4 || ws[0] != L.conv.out_c || ws[1] < 1 || ws[2] != L.conv.kernel_h || ws[3] != L.conv.kernel_w)
        return bad("tensor '" + prefix + "weight' must have shape [out_c, in_c, kh, kw] = [" +
                   std::to_string(L.conv.out_c) + ", in_c >= 1, " + std::to_string(L.conv.kernel_h) + ", " +
                   std::to_string(L.conv.kernel_w) + "], got " + shape_text(ws));
      L.conv.in_c = static_cast<int>(ws[1]);
      n = L.conv.out_c;
    }
    if ((*b)->shape != std::vector<std::int64_t>{n})
      return bad("tensor '" + prefix + "bias' has shape " + shape_text((*b)->shape) + ", expected [" +
                 std::to_string(n) + "]");
    if ((*rq)->shape != std::vector<std::int64_t>{2})
      return bad("tensor '" + prefix + "requant' has shape " + shape_text((*rq)->shape) +
                 ", expected [2] (multiplier, shift)");
    const char* wp = data.data() + (*w)->begin;
    L.weight.assign(reinterpret_cast<const std::int8_t*>(wp), reinterpret_cast<const std::int8_t*>(wp) + ((*w)->end - (*w)->begin));
    const char* bp = data.data() + (*b)->begin;
    L.bias.resize(static_cast<std::size_t>(n));
    for (std::size_t k = 0; k < L.bias.size(); ++k) L.bias[k] = get_i32le(bp + 4 * k);
    const char* rp = data.data() + (*rq)->begin;
    L.rq.multiplier = get_i32le(rp);
    L.rq.shift = get_i32le(rp + 4);
  }
  if (entries.size() != expected_entries) {
    for (const auto& [name, _] : entries) {
      bool known = false;
      for (std::size_t i = 0; i < m.layers.size() && !known; ++i) {
        if (!has_weights(m.layers[i].kind)) continue;
        const std::string prefix = "layers." + std::to_string(i) + ".";
        known = name == prefix + "weight" || name == prefix + "bias" || name == prefix + "requant";
      }
      if (!known)
        return bad("unexpected tensor '" + name + "' (the model's " + std::to_string(m.layers.size()) +
                   " layers do not use it)");
    }
  }
  if (auto st = complete_shapes(m); !st) return st.err();
  return m;
}

std::uint64_t splitmix64(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

} // namespace

int model::input_size() const {
  if (input_shape.empty()) return 0;
  return static_cast<int>(product(input_shape));
}

int model::output_size() const {
  if (layers.empty()) return input_size();
  const layer& last = layers.back();
  if (!last.out_shape.empty()) return static_cast<int>(product(last.out_shape));
  return last.kind == layer_kind::dense ? last.out : 0;
}

status complete_shapes(model& m) {
  auto geo = derive(m);
  if (!geo) return geo.err();
  for (std::size_t i = 0; i < m.layers.size(); ++i) {
    layer& L = m.layers[i];
    const geometry& g = (*geo)[i];
    L.out_shape = g.out_shape;
    L.in = static_cast<int>(product(g.in_shape));
    L.out = static_cast<int>(product(g.out_shape));
    if (L.kind == layer_kind::conv2d) L.conv = g.conv;
    if (L.kind == layer_kind::maxpool) L.pool = g.pool;
  }
  return ok_status();
}

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

// Writes the layer fields as they are (call complete_shapes first on a hand-built model), so a
// model whose fields do not chain saves into a file that the loader rejects.
std::string save_model(const model& m) {
  json meta = json::object();
  for (const auto& [key, value] : m.metadata) meta[key] = value;
  json specs = json::array();
  for (const auto& L : m.layers) {
    json s = {{"kind", kind_name(L.kind)}};
    switch (L.kind) {
    case layer_kind::dense:
      s["out"] = L.out;
      s["relu"] = L.rq.relu;
      break;
    case layer_kind::conv2d:
      s["out_c"] = L.conv.out_c;
      if (L.conv.kernel_h == L.conv.kernel_w) {
        s["kernel"] = L.conv.kernel_h;
      } else {
        s["kernel_h"] = L.conv.kernel_h;
        s["kernel_w"] = L.conv.kernel_w;
      }
      s["stride"] = L.conv.stride;
      s["pad"] = L.conv.pad;
      s["relu"] = L.rq.relu;
      break;
    case layer_kind::maxpool:
      s["kernel"] = L.pool.kernel;
      s["stride"] = L.pool.stride;
      break;
    case layer_kind::flatten: break;
    }
    specs.push_back(std::move(s));
  }
  meta["format"] = format_tag;
  meta["name"] = m.name;
  meta["input_shape"] = json(m.input_shape).dump();
  meta["layers"] = specs.dump();

  json header = json::object();
  header["__metadata__"] = std::move(meta);
  std::string data;
  auto add = [&](const std::string& name, const char* dtype, std::vector<std::int64_t> shape, const std::string& bytes) {
    const std::uint64_t b = data.size();
    data += bytes;
    header[name] = {{"dtype", dtype}, {"shape", shape}, {"data_offsets", {b, static_cast<std::uint64_t>(data.size())}}};
  };
  for (std::size_t i = 0; i < m.layers.size(); ++i) {
    const auto& L = m.layers[i];
    if (!has_weights(L.kind)) continue;
    const std::string prefix = "layers." + std::to_string(i) + ".";
    const std::vector<std::int64_t> wshape =
        L.kind == layer_kind::dense
            ? std::vector<std::int64_t>{L.out, L.in}
            : std::vector<std::int64_t>{L.conv.out_c, L.conv.in_c, L.conv.kernel_h, L.conv.kernel_w};
    add(prefix + "weight", "I8", wshape, std::string(reinterpret_cast<const char*>(L.weight.data()), L.weight.size()));
    std::string bias;
    for (auto v : L.bias) put_i32le(bias, v);
    add(prefix + "bias", "I32", {static_cast<std::int64_t>(L.bias.size())}, bias);
    std::string rq;
    put_i32le(rq, L.rq.multiplier);
    put_i32le(rq, L.rq.shift);
    add(prefix + "requant", "I32", {2}, rq);
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
  if (!dims.empty()) m.input_shape = {dims[0]};
  std::uint64_t state = seed;
  // Mean square of the layer's input: uniform int8 for the first, ReLU'd activations after.
  double input_ms = 128.0 * 128.0 / 3.0;
  constexpr double target_rms = 40.0; // pre-activation spread in int8 units: varied, rarely saturating
  for (std::size_t i = 0; i + 1 < dims.size(); ++i) {
    layer L;
    L.kind = layer_kind::dense;
    L.in = dims[i];
    L.out = dims[i + 1];
    L.rq.relu = i + 2 < dims.size();
    L.weight.resize(static_cast<std::size_t>(L.in) * static_cast<std::size_t>(L.out));
    for (auto& w : L.weight) w = static_cast<std::int8_t>(static_cast<int>(splitmix64(state) % 255) - 127);
    const double weight_ms = 127.0 * 128.0 / 3.0; // uniform in [-127, 127]
    const double acc_rms = std::sqrt(static_cast<double>(L.in) * weight_ms * input_ms);
    const auto bias_span = static_cast<std::uint64_t>(acc_rms / 4.0) + 1;
    L.bias.resize(static_cast<std::size_t>(L.out));
    for (auto& b : L.bias)
      b = static_cast<std::int32_t>(static_cast<std::int64_t>(splitmix64(state) % (2 * bias_span + 1)) -
                                    static_cast<std::int64_t>(bias_span));
    quantize_multiplier(target_rms / acc_rms, L.rq.multiplier, L.rq.shift);
    input_ms = target_rms * target_rms / 2.0; // ReLU keeps half of a zero-mean spread
    m.layers.push_back(std::move(L));
  }
  (void)complete_shapes(m); // fills out_shape; dims out of range leave a model the loader rejects
  m.hash = verify::sha256_hex(save_model(m));
  return m;
}

bool ends_trace_layer(const model& m, std::size_t i) {
  if (i + 1 >= m.layers.size()) return true;
  const layer_kind next = m.layers[i + 1].kind;
  return next != layer_kind::maxpool && next != layer_kind::flatten;
}

// Large outputs are hashed on two of the host's cores (the cpu backend's threads) whichever
// backend computed them.
std::string layer_hash(std::string_view bytes) {
  return verify::to_hex(verify::blake3_two_way(bytes, &cpu_run_pair));
}

void seal_trace(inference& r) {
  r.trace_root = verify::merkle_root(r.layer_hashes);
  r.output_hash = verify::sha256_hex(r.output.data);
}

prepared_model prepare(const model& m, const backend& be) {
  prepared_model pm;
  pm.m = &m;
  pm.be = &be;
  auto geo = derive(m);
  if (!geo) return pm; // nothing packed: run_model reports why
  pm.packed.resize(m.layers.size());
  for (std::size_t i = 0; i < m.layers.size(); ++i)
    if (has_weights(m.layers[i].kind)) pm.packed[i] = be.pack_weights(m.layers[i].weight.data(), (*geo)[i].n, (*geo)[i].k);
  return pm;
}

namespace {

// Checks that a prepared model can run, and derives its geometry.
result<std::vector<geometry>> ready_to_run(const prepared_model& pm) {
  if (pm.m == nullptr || pm.be == nullptr) return make_error(errc::internal, "run_model: the model was not prepared");
  const model& m = *pm.m;
  auto geo = derive(m);
  if (!geo) return make_error(errc::bad_model, "model " + m.hash + ": " + geo.err().reason);
  if (pm.packed.size() != m.layers.size())
    return make_error(errc::internal, "model " + m.hash + " was prepared for different layers");
  for (std::size_t i = 0; i < m.layers.size(); ++i)
    if (has_weights(m.layers[i].kind) && !pm.packed[i])
      return make_error(errc::internal, "model " + m.hash + " layer " + std::to_string(i) + " has no packed weights");
  return geo;
}

// Checks an i8 [rows, width] activation with 1 <= rows <= max_rows; `what` names it.
status check_activation(const tensor& t, std::int64_t width, int max_rows, const char* what) {
  const bool shape_ok = t.shape.size() == 2 && t.shape[1] == width;
  const bool rows_ok = shape_ok && t.shape[0] >= 1 && t.shape[0] <= max_rows;
  if (t.type != dtype::i8 || !rows_ok) {
    std::string reason = std::string(what) + ": expected i8 [rows, " + std::to_string(width) + "]";
    if (t.type == dtype::i8 && shape_ok) reason += " with 1 <= rows <= " + std::to_string(max_rows);
    reason += ", got " + std::string(dtype_name(t.type)) + " [" + shape_string(t.shape) + "]";
    return make_error(errc::bad_input, reason);
  }
  const std::size_t want = static_cast<std::size_t>(t.shape[0]) * static_cast<std::size_t>(width);
  if (t.data.size() != want)
    return make_error(errc::bad_input, std::string(what) + " i8 [" + shape_string(t.shape) + "] needs " +
                                           std::to_string(want) + " bytes, got " + std::to_string(t.data.size()));
  return ok_status();
}

// Model layers [begin, end) on `act` (all rows at once), hashing each trace layer that ends
// inside the span into `hashes`: the one loop every run, full or partial, goes through.
std::string run_span(const prepared_model& pm, const std::vector<geometry>& geo, std::string act, int rows,
                     std::size_t begin, std::size_t end, const std::optional<corruption>& corrupt,
                     std::vector<std::string>& hashes) {
  const model& m = *pm.m;
  const backend& be = *pm.be;
  for (std::size_t i = begin; i < end; ++i) {
    const layer& L = m.layers[i];
    const geometry& g = geo[i];
    const auto* a = reinterpret_cast<const std::int8_t*>(act.data());
    std::string out;
    if (L.kind != layer_kind::flatten) {
      out.assign(static_cast<std::size_t>(rows) * static_cast<std::size_t>(product(g.out_shape)), '\0');
      auto* o = reinterpret_cast<std::int8_t*>(out.data());
      switch (L.kind) {
      case layer_kind::dense: be.dense(a, rows, pm.packed[i], g.n, g.k, L.bias.data(), L.rq, o); break;
      case layer_kind::conv2d: be.conv2d(a, rows, pm.packed[i], L.bias.data(), g.conv, L.rq, o); break;
      case layer_kind::maxpool: be.maxpool(a, rows, g.pool, o); break;
      case layer_kind::flatten: break;
      }
    } else {
      out = std::move(act); // NCHW flattened is the row layout already
    }
    if (corrupt && i == corrupt->layer % m.layers.size() && !out.empty()) {
      auto& v = out[corrupt->value % out.size()];
      v = static_cast<char>(static_cast<std::uint8_t>(v) + static_cast<std::uint8_t>(corrupt->delta ? corrupt->delta : 1));
    }
    if (ends_trace_layer(m, i)) hashes.push_back(layer_hash(out));
    act = std::move(out);
  }
  return act;
}

// The model layers [begin, end) of each trace layer.
std::vector<std::pair<std::size_t, std::size_t>> trace_spans(const model& m) {
  std::vector<std::pair<std::size_t, std::size_t>> spans;
  std::size_t begin = 0;
  for (std::size_t i = 0; i < m.layers.size(); ++i)
    if (ends_trace_layer(m, i)) {
      spans.emplace_back(begin, i + 1);
      begin = i + 1;
    }
  return spans;
}

std::int64_t width_before(const model& m, std::size_t layer) {
  return layer == 0 ? product(m.input_shape) : product(m.layers[layer - 1].out_shape);
}

// A prepared model's geometry and the model layers [begin, end) of its trace layer t.
struct trace_layer_plan {
  std::vector<geometry> geo;
  std::size_t begin = 0, end = 0;
  bool last = false;
};
result<trace_layer_plan> plan_trace_layer(const prepared_model& pm, std::size_t t) {
  auto geo = ready_to_run(pm);
  if (!geo) return geo.err();
  const auto spans = trace_spans(*pm.m);
  if (t >= spans.size())
    return make_error(errc::bad_input, "trace layer " + std::to_string(t) + " asked; model " +
                                           pm.m->hash.substr(0, 12) + " has " + std::to_string(spans.size()));
  return trace_layer_plan{std::move(geo.value()), spans[t].first, spans[t].second, t + 1 == spans.size()};
}

} // namespace

std::size_t trace_layer_count(const model& m) { return trace_spans(m).size(); }

result<inference> run_model(const prepared_model& pm, const tensor& input, int max_rows,
                            const std::optional<corruption>& corrupt) {
  try {
    auto geo = ready_to_run(pm);
    if (!geo) return geo.err();
    const model& m = *pm.m;
    if (auto st = check_activation(input, product(m.input_shape), max_rows, "input"); !st) {
      auto e = st.err();
      e.reason = e.reason.substr(std::string("input: ").size()); // the input is what everyone means
      return e;
    }
    const int rows = static_cast<int>(input.shape[0]);
    inference r;
    std::string act = run_span(pm, *geo, input.data, rows, 0, m.layers.size(), corrupt, r.layer_hashes);
    const int out_dim = static_cast<int>(product(geo->back().out_shape));
    r.output.type = dtype::i8;
    r.output.shape = {rows, out_dim};
    r.output.data = std::move(act);
    r.classes.resize(static_cast<std::size_t>(rows));
    argmax_rows(r.output.i8(), rows, out_dim, r.classes.data());
    seal_trace(r);
    return r;
  } catch (const std::exception& e) {
    return make_error(errc::internal, std::string("inference failed: ") + e.what());
  }
}

result<tensor> trace_layer_output(const prepared_model& pm, const tensor& input, std::size_t t, int max_rows) {
  try {
    auto plan = plan_trace_layer(pm, t);
    if (!plan) return plan.err();
    if (auto st = check_activation(input, product(pm.m->input_shape), max_rows, "input"); !st) return st.err();
    const int rows = static_cast<int>(input.shape[0]);
    std::vector<std::string> hashes;
    tensor out;
    out.type = dtype::i8;
    out.data = run_span(pm, plan->geo, input.data, rows, 0, plan->end, std::nullopt, hashes);
    out.shape = {rows, static_cast<std::int64_t>(out.data.size()) / rows};
    return out;
  } catch (const std::exception& e) {
    return make_error(errc::internal, std::string("inference failed: ") + e.what());
  }
}

result<layer_check> run_trace_layer(const prepared_model& pm, std::size_t t, const tensor& entering, int max_rows) {
  try {
    auto plan = plan_trace_layer(pm, t);
    if (!plan) return plan.err();
    if (auto st = check_activation(entering, width_before(*pm.m, plan->begin), max_rows,
                                   "the activation entering the layer");
        !st)
      return st.err();
    std::vector<std::string> hashes;
    layer_check c;
    const auto out = run_span(pm, plan->geo, entering.data, static_cast<int>(entering.shape[0]), plan->begin, plan->end,
                              std::nullopt, hashes);
    c.layer_hash = hashes.at(0);
    if (plan->last) c.output_hash = verify::sha256_hex(out);
    return c;
  } catch (const std::exception& e) {
    return make_error(errc::internal, std::string("inference failed: ") + e.what());
  }
}

result<inference> run_model(const model& m, const tensor& input, const backend& be, int max_rows) {
  const prepared_model pm = prepare(m, be);
  return run_model(pm, input, max_rows);
}

} // namespace haca::kernels
