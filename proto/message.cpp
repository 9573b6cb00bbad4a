#include "proto/message.hpp"

#include <algorithm>
#include <limits>

namespace haca::proto {

namespace {

using json = nlohmann::json;

constexpr std::size_t max_tensor_rank = 8;

// A peer's string quoted for a reason: cut short and stripped of control bytes so a hostile
// frame cannot flood or garble a log line.
std::string peer_text(std::string_view s) {
  constexpr std::size_t max_shown = 32;
  std::string out = "'";
  for (std::size_t i = 0; i < s.size() && i < max_shown; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    out += (c < 0x20 || c == 0x7f) ? '?' : static_cast<char>(c);
  }
  if (s.size() > max_shown) out += "...";
  return out + "'";
}

std::string type_of(const json& j) {
  if (j.is_number_float()) return "float";
  if (j.is_number()) return "integer";
  return j.type_name();
}

error fail(const char* code, std::string reason) { return error{code, std::move(reason)}; }

} // namespace

std::vector<std::string> encode(const message& m) {
  json header = m.header.is_object() ? m.header : json::object();
  if (m.tensors.empty()) {
    header.erase("tensors");
  } else {
    json descriptors = json::array();
    for (const auto& t : m.tensors)
      descriptors.push_back({{"dtype", std::string(kernels::dtype_name(t.type))}, {"shape", t.shape}});
    header["tensors"] = std::move(descriptors);
  }
  std::vector<std::string> frames;
  frames.reserve(3 + m.tensors.size());
  frames.emplace_back(protocol_tag);
  frames.push_back(m.command);
  // replace: a string with invalid UTF-8 must not throw out of the codec.
  frames.push_back(header.dump(-1, ' ', false, json::error_handler_t::replace));
  for (const auto& t : m.tensors) frames.push_back(t.data);
  return frames;
}

result<message> decode(const std::vector<std::string>& frames, const limits& lim) {
  if (frames.size() < 3)
    return fail(errc::malformed_frame, "expected at least 3 frames (tag, command, header), got " +
                                           std::to_string(frames.size()));
  if (frames.size() > lim.max_frames)
    return fail(errc::oversized, "expected at most " + std::to_string(lim.max_frames) + " frames, got " +
                                     std::to_string(frames.size()));

  if (frames[0] != protocol_tag)
    return fail(errc::unknown_version, "unknown protocol version " + peer_text(frames[0]) +
                                           ", this coordinator speaks " + std::string(protocol_tag));

  const auto& command = frames[1];
  if (std::find(all_commands.begin(), all_commands.end(), command) == all_commands.end())
    return fail(errc::unknown_command, "unknown command " + peer_text(command));

  const auto& header_text = frames[2];
  if (header_text.size() > lim.max_header_bytes)
    return fail(errc::oversized, "header has " + std::to_string(header_text.size()) + " bytes, over the " +
                                     std::to_string(lim.max_header_bytes) + "-byte limit");

  message m;
  m.command = command;
  try {
    m.header = json::parse(header_text);
  } catch (const json::exception& e) {
    return fail(errc::malformed_frame, std::string("header is not a JSON object: ") + e.what());
  }
  if (!m.header.is_object())
    return fail(errc::malformed_frame, "header is not a JSON object: got a JSON " + type_of(m.header));

  // Tensor descriptors: all checked (count, dtype, shape, size limit) before any payload byte
  // is looked at or copied.
  const std::size_t payload_frames = frames.size() - 3;
  struct descriptor {
    kernels::dtype type;
    std::vector<std::int64_t> shape;
    std::int64_t bytes;
  };
  std::vector<descriptor> descriptors;
  const auto it = m.header.find("tensors");
  if (it != m.header.end()) {
    if (!it->is_array())
      return fail(errc::malformed_frame, "header field 'tensors' must be an array, got " + type_of(*it));
    if (it->size() != payload_frames)
      return fail(errc::malformed_frame, "header describes " + std::to_string(it->size()) + " tensors, got " +
                                             std::to_string(payload_frames) + " payload frames");
    descriptors.reserve(it->size());
    for (std::size_t i = 0; i < it->size(); ++i) {
      const auto& d = (*it)[i];
      const std::string name = "tensor " + std::to_string(i);
      if (!d.is_object())
        return fail(errc::malformed_frame, name + " descriptor must be an object, got " + type_of(d));
      const auto dt = d.find("dtype");
      if (dt == d.end()) return fail(errc::missing_field, name + " descriptor lacks 'dtype'");
      if (!dt->is_string())
        return fail(errc::malformed_frame, name + " field 'dtype' must be a string, got " + type_of(*dt));
      const auto& dtype_text = dt->get_ref<const std::string&>();
      auto type = kernels::parse_dtype(dtype_text);
      if (!type)
        return fail(errc::malformed_frame, name + " has unknown dtype " + peer_text(dtype_text) + " (expected i8 or i32)");
      const auto sh = d.find("shape");
      if (sh == d.end()) return fail(errc::missing_field, name + " descriptor lacks 'shape'");
      if (!sh->is_array())
        return fail(errc::malformed_frame, name + " field 'shape' must be an array, got " + type_of(*sh));
      if (sh->empty() || sh->size() > max_tensor_rank)
        return fail(errc::malformed_frame, name + " shape must have 1 to " + std::to_string(max_tensor_rank) +
                                               " dimensions, got " + std::to_string(sh->size()));
      descriptor out{*type, {}, 0};
      out.shape.reserve(sh->size());
      const auto elem = static_cast<std::int64_t>(kernels::dtype_size(*type));
      std::int64_t bytes = elem;
      bool over = false;
      std::string declared; // "1x784", also for dimensions too large for int64
      for (std::size_t k = 0; k < sh->size(); ++k) {
        const auto& v = (*sh)[k];
        if (!v.is_number_integer())
          return fail(errc::malformed_frame, name + " dimension " + std::to_string(k) +
                                                 " must be a positive integer, got " + type_of(v));
        if (k) declared += 'x';
        declared += v.dump();
        std::int64_t dim = 0;
        if (v.is_number_unsigned()) {
          const auto u = v.get<std::uint64_t>();
          dim = u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())
                    ? std::numeric_limits<std::int64_t>::max()
                    : static_cast<std::int64_t>(u);
        } else {
          dim = v.get<std::int64_t>();
        }
        if (dim < 1)
          return fail(errc::malformed_frame, name + " dimension " + std::to_string(k) +
                                                 " must be a positive integer, got " + v.dump());
        // Multiply while it fits in 64 bits; past that the reason shows no byte count.
        if (!over && bytes > std::numeric_limits<std::int64_t>::max() / dim) over = true;
        if (!over) bytes *= dim;
        out.shape.push_back(dim);
      }
      if (over || bytes > lim.max_tensor_bytes)
        return fail(errc::oversized, name + " declares " + declared + " " + dtype_text +
                                         (over ? "" : " = " + std::to_string(bytes) + " bytes") + ", over the " +
                                         std::to_string(lim.max_tensor_bytes) + "-byte limit");
      out.bytes = bytes;
      descriptors.push_back(std::move(out));
    }
  } else if (payload_frames != 0) {
    return fail(errc::malformed_frame, "header describes 0 tensors, got " + std::to_string(payload_frames) +
                                           " payload frames");
  }

  for (std::size_t i = 0; i < descriptors.size(); ++i) {
    const auto have = frames[3 + i].size();
    if (static_cast<std::int64_t>(have) != descriptors[i].bytes)
      return fail(errc::bad_input, "tensor " + std::to_string(i) + " frame has " + std::to_string(have) +
                                       " bytes, header declares " + std::to_string(descriptors[i].bytes));
  }

  // The descriptors live in m.tensors now; keeping them in the header too would let the two
  // disagree after an edit.
  m.header.erase("tensors");
  m.tensors.reserve(descriptors.size());
  for (std::size_t i = 0; i < descriptors.size(); ++i)
    m.tensors.push_back(kernels::tensor{descriptors[i].type, std::move(descriptors[i].shape), frames[3 + i]});
  return m;
}

} // namespace haca::proto
