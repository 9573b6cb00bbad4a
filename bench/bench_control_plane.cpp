// haca's control plane (client -> coordinator -> provider -> coordinator -> client) vs a bare
// ZeroMQ echo of the same messages over the same path shape, same run:
//   cmake --build build -j2 --target haca bench_control_plane && build/bench_control_plane
//   build/bench_control_plane --jobs 20000 --jobs-w1 2000 --db postgresql:///haca --haca build/haca
//
// Baseline (threads of this process, each with its own ZeroMQ context, so its own I/O thread,
// as separate processes would have): a client DEALER -> broker (ROUTER front, DEALER back,
// zmq_proxy) -> 2 worker DEALERs -> back. Every hop is TCP on 127.0.0.1. The client sends the
// exact frames of a haca SUBMIT (784-byte input) and each worker answers with the frames of a
// real signed RESULT (10-byte output, ~770-byte header), built once; the client decodes and
// parses each RESULT as the haca client does. Each echo figure is the best of 3 runs (by jobs/s). High-water marks are raised on every socket (a
// ROUTER at its HWM drops silently: a window of 1000 hangs with the defaults).
//
// haca: a real coordinator and 2 providers as child processes (this build's `haca`), on
// Postgres, serving a generated one-layer MLP (784 -> 10: inference is negligible); a client
// submits tier "none" jobs and times SUBMIT -> ACK and SUBMIT -> RESULT per job.
//
// Each side runs at window 1 (one job at a time: latency) and window 1000 (pipelined: at most
// 1000 jobs without a RESULT; jobs/s = RESULTs / time from the first SUBMIT to the last RESULT).
// Also measured: one fdatasync of an 8 kB write in Postgres's data directory, the floor of a
// durable ACK. Ratios printed: haca jobs/s / echo jobs/s at window 1000 (target >= 0.1) and
// haca window-1 RESULT p50 / (echo window-1 p50 + one fdatasync) (target <= 2), and the same for
// the ACK (one durable commit). Last, the floor of the window-1 ratio: the echo plus what
// persisting before telling and the receipt's signature add (two commits of one small row, one
// Ed25519 signature and check), summed by parts and measured whole (durable_echo_network).
// bench/profile_control_plane.sh gives the CPU per job, part by part.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include <pqxx/pqxx>
#include <zmq.hpp>

#include "app/process.hpp"
#include "app/workload.hpp"
#include "kernels/model.hpp"
#include "net/curve.hpp"
#include "net/zmq_io.hpp"
#include "proto/commands.hpp"
#include "verify/hash.hpp"
#include "verify/receipt.hpp"
#include "verify/signing.hpp"

using namespace haca;
namespace fs = std::filesystem;
using clock_type = std::chrono::steady_clock;
using frames_t = std::vector<std::string>;

namespace {

std::atomic<bool> g_stop{false};
extern "C" void on_signal(int) { g_stop = true; }

struct options {
  std::size_t jobs = 20000;   // window 1000
  std::size_t jobs_w1 = 2000; // window 1
  std::size_t window = 1000;
  std::string db = "postgresql:///haca";
  std::string haca;           // default: next to this binary
  int credit = 0;             // provider --credit (0: the provider's default)
  int timeout_s = 20;         // give up after this long without a reply
  bool keep = false;          // keep the temp dir (logs) after a successful run
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "bench_control_plane: %s\n"
               "usage: bench_control_plane [--jobs N] [--jobs-w1 N] [--window W] [--db URL] [--haca PATH]\n"
               "                           [--credit N] [--timeout-s S] [--keep]\n",
               why);
  std::exit(2);
}

options parse_args(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage(("missing value for " + a).c_str());
      return argv[++i];
    };
    auto number = [&]() -> long {
      auto v = value();
      char* end = nullptr;
      long n = std::strtol(v.c_str(), &end, 10);
      if (*end || n < 0) usage(("bad number for " + a + ": " + v).c_str());
      return n;
    };
    if (a == "--jobs") o.jobs = static_cast<std::size_t>(number());
    else if (a == "--jobs-w1") o.jobs_w1 = static_cast<std::size_t>(number());
    else if (a == "--window") o.window = static_cast<std::size_t>(number());
    else if (a == "--db") o.db = value();
    else if (a == "--haca") o.haca = value();
    else if (a == "--credit") o.credit = static_cast<int>(number());
    else if (a == "--timeout-s") o.timeout_s = static_cast<int>(number());
    else if (a == "--keep") o.keep = true;
    else if (a == "--help" || a == "-h") usage("help");
    else usage(("unknown argument " + a).c_str());
  }
  if (o.jobs == 0 || o.jobs_w1 == 0 || o.window == 0) usage("--jobs, --jobs-w1 and --window must be >= 1");
  return o;
}

// ---- machine ----

void print_cpu() {
  std::ifstream f{"/proc/cpuinfo"};
  std::string line, model = "unknown", flags;
  while (std::getline(f, line)) {
    auto value = [&] { auto p = line.find(':'); return p == std::string::npos ? std::string() : line.substr(p + 2); };
    if (model == "unknown" && line.rfind("model name", 0) == 0) model = value();
    if (flags.empty() && line.rfind("flags", 0) == 0) flags = " " + value() + " ";
  }
  auto has = [&](const char* flag) { return flags.find(std::string(" ") + flag + " ") != std::string::npos; };
  std::printf("cpu: %s, %u hardware threads\n", model.c_str(), std::thread::hardware_concurrency());
  std::printf("cpu features: AVX-512 %s (vnni %s), AMX %s (int8 %s), AVX-VNNI %s\n", has("avx512f") ? "yes" : "no",
              has("avx512_vnni") ? "yes" : "no", has("amx_tile") ? "yes" : "no", has("amx_int8") ? "yes" : "no",
              has("avx_vnni") ? "yes" : "no");
}

// ---- fdatasync ----

struct fsync_result {
  double median_us = 0, min_us = 0;
  std::string where;
  std::string note; // why the fallback, when there was one
};

std::string postgres_data_directory(const std::string& db) {
  try {
    pqxx::connection c{db};
    pqxx::read_transaction tx{c};
    auto r = tx.exec("show data_directory");
    if (!r.empty() && !r[0][0].is_null()) return r[0][0].c_str();
  } catch (const std::exception&) {
    // Not a superuser (or no server): the default Debian location below.
  }
  return "/var/lib/postgresql/15/main";
}

// Median and minimum of `tries` fdatasyncs, each after rewriting the same 8 kB block; nullopt
// with why when the directory is not writable.
std::optional<std::pair<double, double>> fdatasync_us(const std::string& dir, int tries, std::string& why) {
  auto path = (fs::path(dir) / ("haca-bench-fsync-" + std::to_string(::getpid()) + ".tmp")).string();
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    why = std::string("cannot create a file in ") + dir + ": " + std::strerror(errno);
    return std::nullopt;
  }
  std::vector<char> block(8192, 'h');
  std::vector<double> us;
  bool ok = true;
  for (int i = 0; i < tries + 5 && ok; ++i) { // the first 5 (allocation, metadata) are not counted
    block[0] = static_cast<char>(i);
    if (::pwrite(fd, block.data(), block.size(), 0) != static_cast<ssize_t>(block.size())) {
      why = std::string("write failed: ") + std::strerror(errno);
      ok = false;
      break;
    }
    auto t0 = clock_type::now();
    if (::fdatasync(fd) != 0) {
      why = std::string("fdatasync failed: ") + std::strerror(errno);
      ok = false;
      break;
    }
    if (i >= 5) us.push_back(std::chrono::duration<double, std::micro>(clock_type::now() - t0).count());
  }
  ::close(fd);
  ::unlink(path.c_str());
  if (!ok) return std::nullopt;
  std::sort(us.begin(), us.end());
  return std::pair{us[us.size() / 2], us.front()};
}

fsync_result measure_fdatasync(const std::string& db) {
  fsync_result r;
  r.where = postgres_data_directory(db);
  std::string why;
  if (auto us = fdatasync_us(r.where, 200, why)) {
    std::tie(r.median_us, r.min_us) = *us;
    return r;
  }
  r.note = why;
  r.where = fs::temp_directory_path().string();
  if (auto us = fdatasync_us(r.where, 200, why)) std::tie(r.median_us, r.min_us) = *us;
  else r.note += "; " + r.where + " too: " + why;
  return r;
}

// ---- the floor of a window-1 job ----
// What any coordinator that persists before it tells pays per window-1 job besides the wire:
// the JOB waits for the job's commit and the RESULT for the receipt's, so two durable commits
// lie on the path, and the provider signs its receipt and the coordinator checks it.

// A table of its own on the benchmark's Postgres for the smallest durable commits: one 8-byte
// row into a table of one index. Dropped at the end.
struct commit_probe_table {
  std::string db, name = "haca_bench_commit_probe_" + std::to_string(::getpid());
  explicit commit_probe_table(std::string url) : db(std::move(url)) {
    pqxx::connection c{db};
    pqxx::nontransaction{c}.exec0("create table " + name + " (id bigint primary key)");
  }
  ~commit_probe_table() {
    try {
      pqxx::connection c{db};
      pqxx::nontransaction{c}.exec0("drop table if exists " + name);
    } catch (const std::exception&) {
      // The server went away: the table stays, named by this run's pid.
    }
  }

  // Median of `tries` such commits, a prepared statement in autocommit (one round trip).
  double smallest_commit_us(int tries) const {
    pqxx::connection c{db};
    pqxx::nontransaction tx{c};
    c.prepare("probe", "insert into " + name + " values ($1)");
    tx.exec0("truncate " + name);
    std::vector<double> us;
    for (int i = 0; i < tries + 5; ++i) { // the first 5 (plan, first pages) are not counted
      auto t0 = clock_type::now();
      tx.exec_prepared0("probe", i);
      if (i >= 5) us.push_back(std::chrono::duration<double, std::micro>(clock_type::now() - t0).count());
    }
    tx.exec0("truncate " + name);
    std::sort(us.begin(), us.end());
    return us[us.size() / 2];
  }
};

// A receipt of real size (hashes, price, times), unsigned: what the floor's signatures sign.
verify::receipt floor_receipt() {
  verify::receipt r;
  r.job_id = 1234567;
  r.model_hash = r.input_hash = r.output_hash = r.trace_root = verify::sha256_hex("floor");
  r.price = 10;
  r.attempt = 1;
  return r;
}

// Medians of `tries` Ed25519 signatures and checks of a real receipt, in microseconds.
std::pair<double, double> receipt_sign_verify_us(int tries) {
  auto key = verify::generate_key_pair();
  verify::receipt r = floor_receipt();
  std::vector<double> sign, check;
  for (int i = 0; i < tries; ++i) {
    r.finished_at_us = i;
    auto t0 = clock_type::now();
    verify::sign_receipt(r, key);
    auto t1 = clock_type::now();
    if (!verify::verify_receipt(r)) throw std::runtime_error("a receipt just signed does not verify");
    auto t2 = clock_type::now();
    sign.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
    check.push_back(std::chrono::duration<double, std::micro>(t2 - t1).count());
  }
  std::sort(sign.begin(), sign.end());
  std::sort(check.begin(), check.end());
  return {sign[sign.size() / 2], check[check.size() / 2]};
}

// ---- the client loop shared by both sides ----

enum class reply_kind { ack, result, error, other };
struct reply_info {
  reply_kind kind = reply_kind::other;
  std::size_t index = 0;
  std::string error; // code: reason
};

struct run_stats {
  std::size_t jobs = 0, results = 0, acks = 0, errors = 0;
  std::string first_error;
  double seconds = 0;
  std::vector<std::int64_t> ack_us, result_us;
  double jobs_per_s() const { return seconds > 0 ? static_cast<double>(results) / seconds : 0; }
};

double percentile_us(std::vector<std::int64_t> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  auto i = static_cast<std::size_t>(q * static_cast<double>(v.size() - 1) + 0.5);
  return static_cast<double>(v[std::min(i, v.size() - 1)]);
}

// Sends requests[i] over s with at most `window` of them unanswered (no RESULT or ERROR yet);
// classify() maps a reply to its request. `alive` is asked while no reply comes: it throws
// when the far side is gone. Throws after timeout_s without any reply.
run_stats run_window(zmq::socket_t& s, const std::vector<frames_t>& requests, std::size_t window,
                     const std::function<reply_info(const frames_t&)>& classify, int timeout_s,
                     const std::function<void()>& alive, const char* label) {
  const std::size_t n = requests.size();
  std::vector<clock_type::time_point> sent(n);
  std::vector<char> acked(n, 0), finished(n, 0);
  run_stats st;
  st.jobs = n;
  st.ack_us.reserve(n);
  st.result_us.reserve(n);
  std::size_t next = 0, done = 0;
  const auto start = clock_type::now();
  auto last_reply = start;
  frames_t frames;
  zmq::pollitem_t item{s.handle(), 0, ZMQ_POLLIN, 0};
  while (done < n) {
    if (g_stop) throw std::runtime_error("interrupted");
    while (next < n && next - done < window) {
      sent[next] = clock_type::now();
      net::send_frames(s, requests[next]);
      ++next;
    }
    if (net::poll(&item, 1, std::chrono::milliseconds(100)) == 0) {
      alive();
      if (clock_type::now() - last_reply > std::chrono::seconds(timeout_s)) {
        char buf[400];
        std::snprintf(buf, sizeof buf,
                      "%s: no reply for %d s; %zu of %zu jobs answered (%zu ACKed, %zu sent) at window %zu", label,
                      timeout_s, done, n, st.acks, next, window);
        throw std::runtime_error(buf);
      }
      continue;
    }
    // Drain what is there before sending more.
    while (s.get(zmq::sockopt::events) & ZMQ_POLLIN) {
      net::recv_frames(s, frames);
      const auto now = clock_type::now();
      last_reply = now;
      auto r = classify(frames);
      if (r.kind == reply_kind::other || r.index >= n || r.index >= next) continue;
      auto us = std::chrono::duration_cast<std::chrono::microseconds>(now - sent[r.index]).count();
      if (r.kind == reply_kind::ack) {
        if (!acked[r.index]) {
          acked[r.index] = 1;
          ++st.acks;
          st.ack_us.push_back(us);
        }
        continue;
      }
      if (finished[r.index]) continue;
      finished[r.index] = 1;
      ++done;
      if (r.kind == reply_kind::result) {
        ++st.results;
        st.result_us.push_back(us);
      } else {
        if (st.errors++ == 0) st.first_error = r.error;
      }
    }
  }
  st.seconds = std::chrono::duration<double>(clock_type::now() - start).count();
  return st;
}

// ---- messages ----

std::vector<frames_t> make_submits(const std::string& client_id, const std::string& prefix, std::size_t count,
                                   const std::string& model, std::int64_t max_price, std::uint64_t seed) {
  auto inputs = app::random_inputs(count, 784, seed);
  std::vector<frames_t> out;
  out.reserve(count);
  for (std::size_t i = 0; i < count; ++i) {
    proto::submit_request s{client_id, prefix + std::to_string(i), model, "none", max_price, 0, std::move(inputs[i])};
    out.push_back(proto::encode(proto::make_submit(s)));
  }
  return out;
}

// A RESULT as a provider's receipt makes it: real hashes, a real signature.
frames_t make_echo_result(const std::string& model) {
  auto key = verify::generate_key_pair();
  proto::job_result r;
  r.request_id = "w1000-12345";
  r.job_id = 1234567;
  r.classes = {3};
  r.output.type = kernels::dtype::i8;
  r.output.shape = {1, 10};
  r.output.data.assign(10, '\x05');
  r.receipt.job_id = r.job_id;
  r.receipt.model_hash = model;
  r.receipt.input_hash = verify::sha256_hex(std::string(784, 'x'));
  r.receipt.output_hash = verify::sha256_hex(r.output.data);
  r.receipt.trace_root = verify::sha256_hex("trace");
  r.receipt.price = 10;
  r.receipt.attempt = 1;
  r.receipt.started_at_us = 1764000000000000;
  r.receipt.finished_at_us = 1764000000000100;
  verify::sign_receipt(r.receipt, key);
  return proto::encode(proto::make_result(r));
}

std::size_t bytes_of(const frames_t& f) {
  std::size_t n = 0;
  for (const auto& x : f) n += x.size();
  return n;
}

std::string frame_sizes(const frames_t& f) {
  std::string s;
  for (const auto& x : f) s += (s.empty() ? "" : "+") + std::to_string(x.size());
  return s;
}

// ---- baseline: bare ZeroMQ echo ----

void tune(zmq::socket_t& s) {
  s.set(zmq::sockopt::sndhwm, 1000000);
  s.set(zmq::sockopt::rcvhwm, 1000000);
  s.set(zmq::sockopt::linger, 0);
}

// The broker's two sockets: a ROUTER for clients and a DEALER for workers, on loopback ports.
struct broker_sockets {
  zmq::socket_t front, back;
  std::string front_endpoint, back_endpoint;
};

broker_sockets bind_broker(zmq::context_t& ctx) {
  broker_sockets b{zmq::socket_t{ctx, zmq::socket_type::router}, zmq::socket_t{ctx, zmq::socket_type::dealer}, "", ""};
  tune(b.front);
  tune(b.back);
  b.front.bind("tcp://127.0.0.1:*");
  b.back.bind("tcp://127.0.0.1:*");
  b.front_endpoint = b.front.get(zmq::sockopt::last_endpoint);
  b.back_endpoint = b.back.get(zmq::sockopt::last_endpoint);
  return b;
}

// Echo workers: threads with a ZeroMQ context each (as separate processes would have), each a
// DEALER on the broker's back end. Each request [client identity, seq, SUBMIT frames...] is
// answered [client identity, seq] + what `answer` appends; every thread has its own copy of it.
using echo_answer = std::function<void(frames_t& out)>;

struct echo_workers {
  std::vector<std::unique_ptr<zmq::context_t>> contexts;
  std::vector<std::thread> threads;
  std::atomic<bool> stop{false};

  echo_workers(const std::string& back_endpoint, int count, const echo_answer& answer) {
    for (int w = 0; w < count; ++w) {
      contexts.push_back(std::make_unique<zmq::context_t>(1));
      threads.emplace_back([this, answer, back_endpoint, ctx = contexts.back().get()]() mutable {
        zmq::socket_t s{*ctx, zmq::socket_type::dealer};
        tune(s);
        s.connect(back_endpoint);
        zmq::pollitem_t item{s.handle(), 0, ZMQ_POLLIN, 0};
        frames_t in, out;
        while (!stop) {
          if (net::poll(&item, 1, std::chrono::milliseconds(100)) == 0) continue;
          while (s.get(zmq::sockopt::events) & ZMQ_POLLIN) {
            net::recv_frames(s, in);
            out.clear();
            out.push_back(std::move(in[0]));
            out.push_back(std::move(in[1]));
            answer(out);
            net::send_frames(s, out);
          }
        }
      });
    }
  }
  void join() {
    stop = true;
    for (auto& t : threads)
      if (t.joinable()) t.join();
  }
  ~echo_workers() { join(); }
};

struct echo_network {
  zmq::context_t broker_ctx{1};
  std::thread broker;
  std::unique_ptr<echo_workers> workers;
  std::string front_endpoint;

  explicit echo_network(const frames_t& reply, int worker_count = 2) {
    auto b = bind_broker(broker_ctx);
    zmq::socket_t control{broker_ctx, zmq::socket_type::pair};
    control.bind("inproc://echo-control");
    front_endpoint = b.front_endpoint;
    broker = std::thread([f = std::move(b.front), k = std::move(b.back), c = std::move(control)]() mutable {
      try {
        zmq::proxy_steerable(f, k, zmq::socket_ref(), c);
      } catch (const zmq::error_t&) {
      }
    });
    workers = std::make_unique<echo_workers>(b.back_endpoint, worker_count, [&reply](frames_t& out) {
      out.insert(out.end(), reply.begin(), reply.end());
    });
  }

  ~echo_network() {
    workers->join();
    {
      zmq::socket_t c{broker_ctx, zmq::socket_type::pair};
      c.connect("inproc://echo-control");
      c.send(zmq::str_buffer("TERMINATE"));
    }
    broker.join();
  }
};

run_stats run_echo(const std::string& endpoint, const std::vector<frames_t>& submits, std::size_t window) {
  // Each request gets a leading 8-byte sequence frame the workers echo back.
  std::vector<frames_t> requests;
  requests.reserve(submits.size());
  for (std::size_t i = 0; i < submits.size(); ++i) {
    frames_t f;
    f.reserve(submits[i].size() + 1);
    f.emplace_back(reinterpret_cast<const char*>(&i), sizeof i);
    f.insert(f.end(), submits[i].begin(), submits[i].end());
    requests.push_back(std::move(f));
  }
  zmq::context_t ctx{1};
  zmq::socket_t s{ctx, zmq::socket_type::dealer};
  tune(s);
  s.connect(endpoint);
  frames_t rest;
  auto classify = [&](const frames_t& f) {
    reply_info r;
    if (f.size() < 2 || f[0].size() != sizeof(std::size_t)) return r;
    std::memcpy(&r.index, f[0].data(), sizeof r.index);
    // The haca client's work on a RESULT: decode the frames, parse the header.
    rest.assign(f.begin() + 1, f.end());
    auto m = proto::decode(rest);
    if (m && m->command == proto::cmd::result && proto::parse_result(m.value())) r.kind = reply_kind::result;
    return r;
  };
  return run_window(s, requests, window, classify, 20, [] {}, "echo");
}

// The echo with what persist-before-tell and signed receipts add, and nothing else: its broker
// commits before it forwards a request (as haca's JOB waits for the job's commit) and, before
// it forwards a reply, checks the worker's Ed25519 signature and commits again (as the RESULT
// waits for the receipt's); each worker signs a receipt per request. Each commit is the
// smallest durable one (one 8-byte row per message into a table of one index, one statement in
// autocommit, the messages that arrived meanwhile together) on the benchmark's Postgres, from
// the broker's thread. No JSON, no CurveZMQ, no actors: at window 1, the floor of any design
// with those two commits and that signature on a job's path; at window 1000, what one broker
// thread doing that work reaches.
struct durable_echo_network {
  zmq::context_t broker_ctx{1};
  std::thread broker;
  std::unique_ptr<echo_workers> workers;
  std::atomic<bool> stop{false};
  std::string front_endpoint, error;
  verify::key_pair key = verify::generate_key_pair();
  verify::receipt signed_template = floor_receipt();

  durable_echo_network(const frames_t& reply, const std::string& db, const std::string& table) {
    verify::sign_receipt(signed_template, key); // sets provider_key
    auto b = bind_broker(broker_ctx);
    front_endpoint = b.front_endpoint;
    auto conn = std::make_shared<pqxx::connection>(db); // throws here, before any thread, when it cannot
    conn->prepare("commit", "insert into " + table + " select unnest($1::bigint[])");
    broker = std::thread([this, f = std::move(b.front), k = std::move(b.back), conn]() mutable {
      try {
        run_broker(f, k, *conn);
      } catch (const std::exception& e) {
        error = e.what();
      }
    });
    workers = std::make_unique<echo_workers>(
        b.back_endpoint, 2, [this, &reply, r = signed_template](frames_t& out) mutable {
          r.finished_at_us = static_cast<std::int64_t>(std::hash<std::string>{}(out[1])); // the seq
          verify::sign_receipt(r, key);
          out.insert(out.end(), reply.begin(), reply.end());
          out.push_back(r.signature);
        });
  }

  // Group commit, as haca's store does: what arrived meanwhile (up to 1024 messages) is
  // committed in one statement, one row each, then forwarded.
  void run_broker(zmq::socket_t& front, zmq::socket_t& back, pqxx::connection& conn) {
    pqxx::nontransaction tx{conn};
    std::int64_t row = 0;
    verify::receipt r = signed_template;
    std::vector<frames_t> batch;
    auto commit_and_forward = [&](zmq::socket_t& from, zmq::socket_t& to, bool replies) {
      batch.clear();
      std::string ids = "{";
      while (batch.size() < 1024 && (from.get(zmq::sockopt::events) & ZMQ_POLLIN)) {
        auto& frames = batch.emplace_back();
        net::recv_frames(from, frames);
        if (replies) { // [client identity, seq, reply frames..., signature]
          r.finished_at_us = static_cast<std::int64_t>(std::hash<std::string>{}(frames[1]));
          r.signature = std::move(frames.back());
          frames.pop_back();
          if (!verify::verify_receipt(r)) throw std::runtime_error("durable echo: a worker's signature does not verify");
        }
        ids += (ids.size() > 1 ? "," : "") + std::to_string(++row);
      }
      if (batch.empty()) return;
      tx.exec_prepared0("commit", ids + "}");
      for (const auto& frames : batch) net::send_frames(to, frames);
    };
    zmq::pollitem_t items[] = {{front.handle(), 0, ZMQ_POLLIN, 0}, {back.handle(), 0, ZMQ_POLLIN, 0}};
    while (!stop) {
      if (net::poll(items, 2, std::chrono::milliseconds(100)) == 0) continue;
      if (items[0].revents & ZMQ_POLLIN) commit_and_forward(front, back, false);
      if (items[1].revents & ZMQ_POLLIN) commit_and_forward(back, front, true);
    }
  }

  ~durable_echo_network() {
    workers->join();
    stop = true;
    broker.join();
  }
};

// ---- haca: a coordinator and 2 providers ----


struct haca_network {
  std::vector<app::child_process> children; // coordinator first
  std::string dir;

  ~haca_network() { stop(); }
  void stop() {
    for (auto it = children.rbegin(); it != children.rend(); ++it) app::stop_process(*it, 3000);
    children.clear();
  }
  // Throws with the log of the first child that has exited.
  void check_alive() {
    for (auto& c : children)
      if (!app::running(c))
        throw std::runtime_error(c.name + " exited; the end of its log (" + c.log_path + "):\n" +
                                 app::tail_file(c.log_path, 1500));
  }
  std::string logs() const {
    std::string out;
    for (const auto& c : children) out += "--- " + c.name + " (" + c.log_path + ") ---\n" + app::tail_file(c.log_path, 800);
    return out;
  }
};

void run_to_end(const std::string& name, const std::string& program, const std::vector<std::string>& args,
                const std::string& log) {
  auto c = app::start_process(name, program, args, log);
  auto deadline = clock_type::now() + std::chrono::seconds(20);
  while (app::running(c)) {
    if (clock_type::now() > deadline) {
      app::kill_hard(c);
      throw std::runtime_error(name + " did not finish in 20 s: " + app::tail_file(log));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

// Waits until `count` providers named tag-* are in the providers table. False when the table
// cannot be read (another schema): the caller then relies on a probe job.
bool wait_registered(haca_network& net, const std::string& db, const std::string& tag, int count) {
  auto deadline = clock_type::now() + std::chrono::seconds(30);
  while (clock_type::now() < deadline) {
    if (g_stop) throw std::runtime_error("interrupted");
    net.check_alive();
    try {
      pqxx::connection c{db};
      pqxx::read_transaction tx{c};
      auto r = tx.exec("select count(*) from providers where role = 'provider' and name like " +
                       tx.quote(tag + "-%"));
      if (r[0][0].as<int>() >= count) return true;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "note: cannot read the providers table (%s); waiting on a probe job instead\n", e.what());
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  throw std::runtime_error("the 2 providers did not register within 30 s\n" + net.logs());
}

reply_info classify_haca(const frames_t& f, const std::string& prefix) {
  reply_info r;
  auto m = proto::decode(f);
  if (!m) return r;
  auto index_of = [&](const std::string& request_id, std::size_t& index) {
    if (request_id.rfind(prefix, 0) != 0) return false;
    index = std::stoul(request_id.substr(prefix.size()));
    return true;
  };
  if (m->command == proto::cmd::ack) {
    if (auto a = proto::parse_ack(m.value()); a && index_of(a->request_id, r.index)) r.kind = reply_kind::ack;
  } else if (m->command == proto::cmd::result) {
    if (auto x = proto::parse_result(m.value()); x && index_of(x->request_id, r.index)) r.kind = reply_kind::result;
  } else if (m->command == proto::cmd::error) {
    if (auto e = proto::parse_error(m.value()); e && index_of(e->request_id, r.index)) {
      r.kind = reply_kind::error;
      r.error = e->code + ": " + e->reason;
    }
  }
  return r;
}

// ---- output ----

void line(const std::string& name, double value, const char* unit, std::optional<double> baseline = std::nullopt) {
  const int decimals = value >= 100 ? 0 : 1;
  if (baseline && *baseline > 0)
    std::printf("%-34s %10.*f %-6s (%.3f x baseline)\n", (name + ":").c_str(), decimals, value, unit, value / *baseline);
  else
    std::printf("%-34s %10.*f %s\n", (name + ":").c_str(), decimals, value, unit);
}

void check_complete(const run_stats& st, const char* label) {
  if (st.errors)
    std::printf("  %s: %zu of %zu jobs answered ERROR (first: %s)\n", label, st.errors, st.jobs, st.first_error.c_str());
}

} // namespace

int main(int argc, char** argv) {
  const options o = parse_args(argc, argv);
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  const std::string haca_bin = o.haca.empty() ? (fs::path(app::self_executable()).parent_path() / "haca").string() : o.haca;
  if (::access(haca_bin.c_str(), X_OK) != 0) usage(("no haca binary at " + haca_bin + " (build it, or pass --haca)").c_str());

  print_cpu();
  const auto fsync = measure_fdatasync(o.db);
  std::printf("fdatasync measured in: %s%s%s\n", fsync.where.c_str(), fsync.note.empty() ? "" : " (FALLBACK: ",
              fsync.note.empty() ? "" : (fsync.note + ")").c_str());
  std::printf("jobs: %zu at window %zu, %zu at window 1; haca: %s\n\n", o.jobs, o.window, o.jobs_w1, haca_bin.c_str());

  const auto run_tag = std::to_string(::getpid()) + "-" +
                       std::to_string(std::chrono::system_clock::now().time_since_epoch().count() / 1000);
  haca_network net;
  int rc = 0;
  try {
    // The model: the smallest MLP `haca model gen` makes with a 784 input, one 784 -> 10 layer.
    net.dir = (fs::temp_directory_path() / ("haca-bench-cp-" + run_tag)).string();
    for (auto sub : {"models", "keys", "logs"}) fs::create_directories(fs::path(net.dir) / sub);
    const auto models_dir = net.dir + "/models";
    const auto log = [&](const std::string& n) { return net.dir + "/logs/" + n + ".log"; };
    run_to_end("model-gen", haca_bin,
               {"model", "gen", "--dims", "784,10", "--name", "bench-tiny", "--out", models_dir + "/tiny.safetensors"},
               log("model-gen"));
    auto model = kernels::load_model_file(models_dir + "/tiny.safetensors");
    if (!model) throw std::runtime_error("haca model gen: " + model.err().reason + "\n" + app::tail_file(log("model-gen")));

    const std::string client_id; // left out of the SUBMITs: haca's account is the connection's CURVE key
    const std::int64_t max_price = 100; // providers ask 10
    auto w1_submits = make_submits(client_id, "w1-", o.jobs_w1, model->hash, max_price, 1);
    auto wn_submits = make_submits(client_id, "wn-", o.jobs, model->hash, max_price, 2);
    auto warm_submits = make_submits(client_id, "warm-", 500, model->hash, max_price, 3);
    auto probe_submits = make_submits(client_id, "probe-", 1, model->hash, max_price, 4);

    // ---- baseline ----
    const frames_t echo_reply = make_echo_result(model->hash);
    std::printf("message bytes (frames): SUBMIT %zu (%s); echo reply %zu (%s)\n", bytes_of(wn_submits[0]),
                frame_sizes(wn_submits[0]).c_str(), bytes_of(echo_reply), frame_sizes(echo_reply).c_str());
    run_stats echo1, echon;
    {
      echo_network echo{echo_reply};
      run_echo(echo.front_endpoint, warm_submits, 100); // warm-up, not counted
      // Best of 3 by jobs/s (its p50/p99 with it): the floor, steadier on a shared machine.
      for (int round = 0; round < 3; ++round) {
        auto a = run_echo(echo.front_endpoint, w1_submits, 1);
        if (a.jobs_per_s() > echo1.jobs_per_s()) echo1 = std::move(a);
        auto b = run_echo(echo.front_endpoint, wn_submits, o.window);
        if (b.jobs_per_s() > echon.jobs_per_s()) echon = std::move(b);
      }
    }
    // The durable echo at window 1, best of 3 as well, with its probe table on --db.
    std::optional<commit_probe_table> commit_probe;
    run_stats durable1, durablen;
    std::string durable_why;
    try {
      commit_probe.emplace(o.db);
      durable_echo_network durable{echo_reply, o.db, commit_probe->name};
      run_echo(durable.front_endpoint, warm_submits, 1);
      for (int round = 0; round < 3 && durable.error.empty(); ++round) {
        auto a = run_echo(durable.front_endpoint, w1_submits, 1);
        if (a.jobs_per_s() > durable1.jobs_per_s()) durable1 = std::move(a);
        auto b = run_echo(durable.front_endpoint, wn_submits, o.window);
        if (b.jobs_per_s() > durablen.jobs_per_s()) durablen = std::move(b);
      }
      durable_why = durable.error;
    } catch (const std::exception& e) {
      durable_why = e.what();
    }

    // ---- haca ----
    const int client_port = app::free_port();
    int node_port = app::free_port();
    while (node_port == client_port) node_port = app::free_port();
    const auto node_ep = "tcp://127.0.0.1:" + std::to_string(node_port);
    const auto tag = "bench-cp-" + run_tag;
    const auto server_key = verify::load_or_create_key(net.dir + "/keys/coordinator.key").value().public_key_hex;
    net.children.push_back(app::start_process(
        "coordinator", haca_bin,
        {"coordinator", "--db", o.db, "--models", models_dir, "--client-port", std::to_string(client_port),
         "--node-port", std::to_string(node_port), "--demo-faucet", "1000000000000", "--key", net.dir + "/keys/coordinator.key"},
        log("coordinator")));
    for (int i = 1; i <= 2; ++i) {
      auto name = tag + "-p" + std::to_string(i);
      std::vector<std::string> args{"provider", "--connect", node_ep, "--coordinator-key", server_key, "--models",
                                    models_dir, "--name", name,
                                    "--key", net.dir + "/keys/p" + std::to_string(i) + ".key", "--price", "10"};
      if (o.credit > 0) args.insert(args.end(), {"--credit", std::to_string(o.credit)});
      net.children.push_back(app::start_process(name, haca_bin, args, log("provider-" + std::to_string(i))));
    }
    auto t_reg = clock_type::now();
    bool registered = wait_registered(net, o.db, tag, 2);
    std::printf("haca: coordinator :%d/:%d and 2 providers (credit %s) %s after %.1f s; logs in %s/logs\n",
                client_port, node_port, o.credit > 0 ? std::to_string(o.credit).c_str() : "default",
                registered ? "registered" : "started", std::chrono::duration<double>(clock_type::now() - t_reg).count(),
                net.dir.c_str());

    zmq::context_t ctx{1};
    zmq::socket_t s{ctx, zmq::socket_type::dealer};
    net::tune_socket(s);
    s.set(zmq::sockopt::linger, 0);
    // The client port speaks CurveZMQ (the echo baseline stays plaintext: haca pays for its encryption).
    if (!net::make_curve_client(s, verify::generate_key_pair(), server_key)) throw std::runtime_error("bad coordinator key");
    s.connect("tcp://127.0.0.1:" + std::to_string(client_port));
    auto alive = [&] { net.check_alive(); };
    std::string haca_result_frames; // of the first RESULT
    auto run_haca = [&](const std::vector<frames_t>& submits, const std::string& prefix, std::size_t window,
                        const char* label) {
      try {
        auto classify = [&](const frames_t& f) {
          auto r = classify_haca(f, prefix);
          if (r.kind == reply_kind::result && haca_result_frames.empty()) haca_result_frames = frame_sizes(f) + " = " + std::to_string(bytes_of(f));
          return r;
        };
        return run_window(s, submits, window, classify, o.timeout_s, alive, label);
      } catch (const std::runtime_error& e) {
        if (g_stop) throw;
        throw std::runtime_error(std::string(e.what()) + "\n" + net.logs());
      }
    };
    // A probe, then a warm-up (neither counted): the first job also makes the client's account
    // (--demo-faucet).
    auto probe = run_haca(probe_submits, "probe-", 1, "haca probe job");
    if (probe.results != 1) throw std::runtime_error("haca: the probe job failed: " + probe.first_error);
    if (!registered) std::this_thread::sleep_for(std::chrono::seconds(2)); // let the second provider join
    run_haca(warm_submits, "warm-", 100, "haca warm-up");

    auto haca1 = run_haca(w1_submits, "w1-", 1, "haca window 1");
    const auto wn_label = "haca window " + std::to_string(o.window);
    auto hacan = run_haca(wn_submits, "wn-", o.window, wn_label.c_str());

    net.stop();

    // ---- report ----
    const auto wn = std::to_string(o.window);
    std::printf("\nbaseline: bare ZeroMQ echo, client DEALER -> broker ROUTER/DEALER (zmq_proxy) -> 2 worker DEALERs,\n"
                "TCP loopback, threads of this process with a ZeroMQ context (I/O thread) each; best of 3 runs\n");
    line("echo window 1 jobs/s", echo1.jobs_per_s(), "jobs/s");
    line("echo window 1 p50", percentile_us(echo1.result_us, 0.5), "us");
    line("echo window 1 p99", percentile_us(echo1.result_us, 0.99), "us");
    line("echo window " + wn + " jobs/s", echon.jobs_per_s(), "jobs/s");
    line("echo window " + wn + " p50", percentile_us(echon.result_us, 0.5), "us");
    line("echo window " + wn + " p99", percentile_us(echon.result_us, 0.99), "us");
    line("fdatasync 8 kB (median of 200)", fsync.median_us, fsync.note.empty() ? "us" : "us (FALLBACK dir, see above)");
    line("fdatasync 8 kB (fastest of 200)", fsync.min_us, "us");

    std::printf("\nhaca: coordinator + 2 providers (child processes), Postgres %s, tier none, MLP 784->10;\n"
                "baseline of each line: the echo's jobs/s or p50/p99 at the same window\n", o.db.c_str());
    const double e1p50 = percentile_us(echo1.result_us, 0.5), e1p99 = percentile_us(echo1.result_us, 0.99);
    const double enp50 = percentile_us(echon.result_us, 0.5), enp99 = percentile_us(echon.result_us, 0.99);
    line("haca window 1 jobs/s", haca1.jobs_per_s(), "jobs/s", echo1.jobs_per_s());
    line("haca window 1 ACK p50", percentile_us(haca1.ack_us, 0.5), "us", e1p50);
    line("haca window 1 ACK p99", percentile_us(haca1.ack_us, 0.99), "us", e1p99);
    line("haca window 1 RESULT p50", percentile_us(haca1.result_us, 0.5), "us", e1p50);
    line("haca window 1 RESULT p99", percentile_us(haca1.result_us, 0.99), "us", e1p99);
    line("haca window " + wn + " jobs/s", hacan.jobs_per_s(), "jobs/s", echon.jobs_per_s());
    line("haca window " + wn + " ACK p50", percentile_us(hacan.ack_us, 0.5), "us", enp50);
    line("haca window " + wn + " ACK p99", percentile_us(hacan.ack_us, 0.99), "us", enp99);
    line("haca window " + wn + " RESULT p50", percentile_us(hacan.result_us, 0.5), "us", enp50);
    line("haca window " + wn + " RESULT p99", percentile_us(hacan.result_us, 0.99), "us", enp99);
    std::printf("  haca RESULT bytes (frames): %s\n", haca_result_frames.c_str());
    check_complete(haca1, "haca window 1");
    check_complete(hacan, wn_label.c_str());
    if (haca1.acks < haca1.jobs || hacan.acks < hacan.jobs)
      std::printf("  ACKs: %zu of %zu at window 1, %zu of %zu at window %zu (latency counts only those received)\n",
                  haca1.acks, haca1.jobs, hacan.acks, hacan.jobs, o.window);

    const double r_tput = echon.jobs_per_s() > 0 ? hacan.jobs_per_s() / echon.jobs_per_s() : 0;
    const double floor_us = e1p50 + fsync.median_us;
    const double r_lat = floor_us > 0 ? percentile_us(haca1.result_us, 0.5) / floor_us : 0;
    std::printf("\nratio haca/echo jobs/s at window %zu:                 %.3f (target >= 0.1: %s)\n", o.window, r_tput,
                r_tput >= 0.1 ? "met" : "not met");
    std::printf("ratio haca w1 RESULT p50 / (echo w1 p50 + fdatasync): %.2f (%.0f us / (%.0f + %.0f) us; target <= 2: %s)\n",
                r_lat, percentile_us(haca1.result_us, 0.5), e1p50, fsync.median_us, r_lat <= 2 ? "met" : "not met");
    // The durable ACK is one commit (the job, and its assignment when a provider has credit);
    // the RESULT waits for a second one (the receipt) after the provider's round trip.
    const double r_ack = floor_us > 0 ? percentile_us(haca1.ack_us, 0.5) / floor_us : 0;
    std::printf("ratio haca w1 ACK p50 / (echo w1 p50 + fdatasync):    %.2f (%.0f us / (%.0f + %.0f) us; same target: %s)\n",
                r_ack, percentile_us(haca1.ack_us, 0.5), e1p50, fsync.median_us, r_ack <= 2 ? "met" : "not met");
    // The floor of the window-1 ratio: what persist-before-tell and the receipt's signature
    // add to the echo, by its parts and measured whole (the durable echo); the rest of haca's
    // path (JSON, CurveZMQ, thread hand-offs, inference, its real rows) comes on top.
    if (commit_probe && durable_why.empty()) {
      const double commit = commit_probe->smallest_commit_us(200);
      const auto [sign_us, verify_us] = receipt_sign_verify_us(200);
      const double parts = e1p50 + 2 * commit + sign_us + verify_us;
      const double d1p50 = percentile_us(durable1.result_us, 0.5);
      std::printf("\nfloor of a window-1 RESULT that persists before it tells (two commits on its path) and signs:\n"
                  "  by parts: echo w1 p50 + 2 x smallest commit + Ed25519 sign + check = %.0f + 2 x %.0f + %.0f + %.0f "
                  "= %.0f us = %.2f x (echo w1 p50 + fdatasync)\n"
                  "  measured: durable echo w1 p50 %.0f us (p99 %.0f us) = %.2f x (echo w1 p50 + fdatasync); "
                  "target for haca <= 2\n",
                  e1p50, commit, sign_us, verify_us, parts, floor_us > 0 ? parts / floor_us : 0, d1p50,
                  percentile_us(durable1.result_us, 0.99), floor_us > 0 ? d1p50 / floor_us : 0);
      std::printf("  durable echo window %zu: %.0f jobs/s = %.3f x the echo's (group commit, a signature per job); "
                  "target for haca >= 0.1\n",
                  o.window, durablen.jobs_per_s(), echon.jobs_per_s() > 0 ? durablen.jobs_per_s() / echon.jobs_per_s() : 0);
      if (durable1.results != durable1.jobs || durablen.results != durablen.jobs) rc = 1;
    } else {
      std::printf("\nfloor not measured: %s\n", durable_why.empty() ? "no probe table" : durable_why.c_str());
    }
    if (haca1.errors || hacan.errors || echo1.results != echo1.jobs || echon.results != echon.jobs) rc = 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "\nbench_control_plane: error: %s\n", e.what());
    net.stop();
    std::fprintf(stderr, "(logs kept in %s)\n", net.dir.c_str());
    return 1;
  }
  if (!o.keep && rc == 0) fs::remove_all(net.dir);
  else std::printf("logs kept in %s/logs\n", net.dir.c_str());
  return rc;
}
