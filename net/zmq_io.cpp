#include "net/zmq_io.hpp"

namespace haca::net {

zmq::context_t& context() {
  // Never destroyed: zmq_ctx_term at exit would wait for thread-local sockets of threads that
  // are still winding down. The process's exit releases it.
  static auto* ctx = new zmq::context_t{1};
  return *ctx;
}

void tune_socket(zmq::socket_t& s, const proto::limits& lim) {
  s.set(zmq::sockopt::sndhwm, 200000);
  s.set(zmq::sockopt::rcvhwm, 200000);
  s.set(zmq::sockopt::linger, 200);
  s.set(zmq::sockopt::maxmsgsize, lim.max_message_bytes);
}

void send_frames(zmq::socket_t& s, const std::vector<std::string>& frames) {
  for (std::size_t i = 0; i < frames.size(); ++i) {
    auto flags = i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none;
    s.send(zmq::buffer(frames[i]), flags);
  }
}

int poll(zmq::pollitem_t* items, std::size_t count, std::chrono::milliseconds timeout) {
  try {
    return zmq::poll(items, count, timeout);
  } catch (const zmq::error_t& e) {
    if (e.num() == EINTR) {
      for (std::size_t i = 0; i < count; ++i)
        items[i].revents = 0;
      return 0;
    }
    throw;
  }
}

bool recv_frames(zmq::socket_t& s, std::vector<std::string>& frames, std::string* user_id) {
  frames.clear();
  if (user_id)
    user_id->clear();
  do {
    zmq::message_t part;
    if (!s.recv(part, zmq::recv_flags::none))
      return false;
    if (user_id && frames.size() == 1) { // a ROUTER's first frame is its own routing id: read the peer's
      try {
        *user_id = part.gets("User-Id");
      } catch (const zmq::error_t&) {
      }
    }
    frames.emplace_back(part.to_string());
  } while (s.get(zmq::sockopt::rcvmore));
  return true;
}

} // namespace haca::net
