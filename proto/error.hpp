#pragma once
// Errors that cross module borders: a stable code (part of the wire protocol, listed in
// docs/PROTOCOL.md) and a readable reason. Exceptions never cross actor or thread borders.
#include <string>
#include <utility>
#include <variant>

namespace haca {

namespace errc {
// Framing and protocol
inline constexpr const char* malformed_frame = "malformed_frame";       // framing: too few frames, bad JSON, tensor descriptors or count
inline constexpr const char* unknown_version = "unknown_version";       // tag frame is not HACA/1
inline constexpr const char* unknown_command = "unknown_command";
inline constexpr const char* missing_field = "missing_field";
inline constexpr const char* oversized = "oversized";                   // a frame or tensor over the configured limit
// Jobs
inline constexpr const char* unknown_model = "unknown_model";
inline constexpr const char* bad_input = "bad_input";                   // a field's type, range or form (ids, text); a tensor's shape, dtype or byte count
inline constexpr const char* forbidden = "forbidden";                   // names an account, or asks about a job, not the connection's own
inline constexpr const char* insufficient_funds = "insufficient_funds";
inline constexpr const char* queue_full = "queue_full";
inline constexpr const char* duplicate_request = "duplicate_request";
inline constexpr const char* unknown_job = "unknown_job";
inline constexpr const char* not_settled = "not_settled";               // PROOF of a job not in a block yet: ask later
inline constexpr const char* no_provider = "no_provider";
inline constexpr const char* expired = "expired";
inline constexpr const char* failed = "failed";
inline constexpr const char* unavailable = "unavailable";               // shutting down: resend after a restart
// Nodes
inline constexpr const char* bad_signature = "bad_signature";
inline constexpr const char* not_registered = "not_registered";
inline constexpr const char* bad_receipt = "bad_receipt";
// Local
inline constexpr const char* bad_model = "bad_model";                   // a model file that does not load
inline constexpr const char* io_error = "io_error";
inline constexpr const char* internal = "internal";
} // namespace errc

struct error {
  std::string code;
  std::string reason;
};

// A value or an error (std::expected is C++23).
template <class T>
class result {
public:
  result(T value) : v_(std::move(value)) {}
  result(error e) : v_(std::move(e)) {}
  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  const error& err() const { return std::get<1>(v_); }

private:
  std::variant<T, error> v_;
};

struct ok_t {};
using status = result<ok_t>;
inline status ok_status() { return ok_t{}; }

inline error make_error(const char* code, std::string reason) { return error{code, std::move(reason)}; }

} // namespace haca
