#pragma once
// One protocol message and its codec: frames <-> message. Pure (no ZeroMQ): the gateway and
// the node/client loops move frames; this checks them.
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kernels/tensor.hpp"
#include "proto/error.hpp"
#include "proto/protocol.hpp"

namespace haca::proto {

struct message {
  std::string command;
  nlohmann::json header = nlohmann::json::object();
  std::vector<kernels::tensor> tensors; // payload frames, described by header["tensors"]
};

// Frames without any routing identity. Sets header["tensors"] from `tensors`.
std::vector<std::string> encode(const message& m);

// Checks, in order: frame count (3..max_frames), tag (unknown_version), command
// (unknown_command), header size (oversized) and JSON object (malformed_frame), the "tensors"
// descriptors (count equals payload frames; dtype known; shape sane and within
// max_tensor_bytes: oversized, before any copy) and each frame's byte count (bad_input).
result<message> decode(const std::vector<std::string>& frames, const limits& lim = {});

} // namespace haca::proto
