#include "app/workload.hpp"

#include <algorithm>
#include <chrono>
#include <map>
#include <random>

#include <spdlog/spdlog.h>

#include "kernels/ops.hpp"
#include "net/client.hpp"

namespace haca::app {

std::vector<kernels::tensor> random_inputs(std::size_t count, int input_dim, std::uint64_t seed) {
  std::mt19937_64 rng{seed};
  std::uniform_int_distribution<int> byte{-128, 127};
  std::vector<kernels::tensor> out(count);
  for (auto& t : out) {
    t.type = kernels::dtype::i8;
    t.shape = {1, input_dim};
    t.data.resize(static_cast<std::size_t>(input_dim));
    for (auto& c : t.data)
      c = static_cast<char>(byte(rng));
  }
  return out;
}

std::vector<kernels::tensor> image_inputs(const std::vector<std::uint8_t>& pixels, int image_count, int pixels_per_image,
                                          std::size_t count) {
  std::vector<kernels::tensor> out(count);
  const auto size = static_cast<std::size_t>(pixels_per_image);
  for (std::size_t i = 0; i < count; ++i) {
    auto& t = out[i];
    t.type = kernels::dtype::i8;
    t.shape = {1, pixels_per_image};
    t.data.resize(size);
    kernels::quantize_pixels(pixels.data() + (i % static_cast<std::size_t>(image_count)) * size, size,
                             reinterpret_cast<std::int8_t*>(t.data.data()));
  }
  return out;
}

double percentile_ms(std::vector<std::int64_t> v, double q) {
  if (v.empty())
    return 0;
  std::sort(v.begin(), v.end());
  auto i = static_cast<std::size_t>(q * static_cast<double>(v.size() - 1) + 0.5);
  return static_cast<double>(v[std::min(i, v.size() - 1)]) / 1000.0;
}

workload_report run_workload(const workload_options& o) {
  using clock = std::chrono::steady_clock;
  net::client conn{o.endpoint};
  workload_report rep;
  rep.jobs.resize(o.inputs.size());
  std::map<std::string, std::size_t> by_request;
  std::vector<clock::time_point> sent(o.inputs.size());
  std::size_t next = 0, finished = 0, unanswered = 0;
  auto start = clock::now();
  auto last_progress = start;

  while (finished < o.inputs.size()) {
    if (o.stop && *o.stop) {
      rep.stopped = true;
      break;
    }
    while (next < o.inputs.size() && unanswered < o.window) {
      auto& job = rep.jobs[next];
      job.request_id = o.request_prefix + std::to_string(next);
      by_request[job.request_id] = next;
      proto::submit_request s{o.client_id, job.request_id, o.model, o.tier, o.max_price, o.deadline_ms, o.inputs[next]};
      sent[next] = clock::now();
      conn.send(proto::make_submit(s));
      ++next;
      ++unanswered;
    }
    auto msg = conn.receive(std::chrono::milliseconds(200));
    if (!msg) {
      if (clock::now() - last_progress > std::chrono::milliseconds(o.timeout_ms)) {
        rep.timed_out = true;
        break;
      }
      continue;
    }
    if (!*msg) {
      spdlog::warn("client: undecodable message: {}", msg->err().reason);
      continue;
    }
    const auto& m = msg->value();
    last_progress = clock::now();
    if (m.command == proto::cmd::ack) {
      if (auto a = proto::parse_ack(m); a && by_request.count(a->request_id))
        rep.jobs[by_request[a->request_id]].job_id = a->job_id;
    } else if (m.command == proto::cmd::result) {
      auto r = proto::parse_result(m);
      if (!r || !by_request.count(r->request_id))
        continue;
      auto i = by_request[r->request_id];
      auto& job = rep.jobs[i];
      if (job.done) {
        ++rep.duplicate_results; // must never happen: one RESULT per request id
        continue;
      }
      job.done = true;
      job.job_id = r->job_id;
      job.classes = r->classes;
      job.receipt = r->receipt;
      job.receipt_valid = verify::verify_receipt(r->receipt) && r->receipt.job_id == r->job_id;
      job.latency_us = std::chrono::duration_cast<std::chrono::microseconds>(clock::now() - sent[i]).count();
      ++rep.results;
      rep.invalid_receipts += job.receipt_valid ? 0 : 1;
      ++finished;
      --unanswered;
      if (o.progress)
        o.progress(finished, o.inputs.size());
    } else if (m.command == proto::cmd::error) {
      auto e = proto::parse_error(m);
      if (!e || !by_request.count(e->request_id))
        continue;
      auto& job = rep.jobs[by_request[e->request_id]];
      if (job.done || !job.error_code.empty())
        continue;
      job.error_code = e->code;
      job.error_reason = e->reason;
      ++rep.errors;
      ++finished;
      --unanswered;
      if (o.progress)
        o.progress(finished, o.inputs.size());
    }
  }
  rep.seconds = std::chrono::duration<double>(clock::now() - start).count();
  return rep;
}

} // namespace haca::app
