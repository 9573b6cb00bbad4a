#pragma once
// ZeroMQ transport helpers shared by the coordinator's gateway and the node and client loops.
// A socket is owned by one thread; these functions never share one.
#include <chrono>
#include <string>
#include <vector>

#include <zmq.hpp>

#include "proto/message.hpp"

namespace haca::net {

zmq::context_t& context(); // one per process

// High-water marks sized for pipelined load: a ROUTER drops silently at its HWM.
void tune_socket(zmq::socket_t& s, const proto::limits& lim = {});

void send_frames(zmq::socket_t& s, const std::vector<std::string>& frames);
// Receives one whole multipart message (blocking). False if interrupted. With user_id: the
// message's ZAP User-Id (on a CURVE connection, the peer's CURVE public key, hex), or "".
bool recv_frames(zmq::socket_t& s, std::vector<std::string>& frames, std::string* user_id = nullptr);

// zmq::poll that treats a signal's interruption as "nothing ready" (the caller checks its stop flag).
int poll(zmq::pollitem_t* items, std::size_t count, std::chrono::milliseconds timeout);

inline void send_message(zmq::socket_t& s, const proto::message& m) { send_frames(s, proto::encode(m)); }

} // namespace haca::net
