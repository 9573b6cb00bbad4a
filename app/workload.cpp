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

namespace {

// Errors after which the same request may succeed later: the request is sent again (same id).
bool retryable(const std::string& code) { return code == errc::queue_full || code == errc::unavailable; }

} // namespace

workload_report run_workload(const workload_options& o) {
  using clock = std::chrono::steady_clock;
  auto conn = std::make_unique<net::client>(o.endpoint, o.credentials);
  workload_report rep;
  rep.jobs.resize(o.inputs.size());
  std::map<std::string, std::size_t> by_request;
  std::map<std::string, std::size_t> by_rerun; // a re-run's request id -> the disputed job's index
  std::vector<clock::time_point> sent(o.inputs.size());
  std::map<std::size_t, clock::time_point> retry_at; // refused for now: send again then
  std::size_t next = 0, finished = 0, unanswered = 0;
  auto start = clock::now();
  auto last_progress = start, last_heard = start;
  auto retry_backoff = std::chrono::milliseconds(100);

  auto submit = [&](std::size_t i) {
    const auto& job = rep.jobs[i];
    conn->send(proto::make_submit({"", job.request_id, o.model, o.tier, o.max_price, o.deadline_ms,
                                   o.inputs[i]}));
  };
  auto settle = [&](job_outcome&) {
    ++finished;
    --unanswered;
    if (o.progress)
      o.progress(finished, o.inputs.size());
  };

  auto linger_until = clock::time_point::max(); // once every job is answered: listen for NOTICEs
  while (finished < o.inputs.size() || clock::now() < linger_until) {
    if (finished == o.inputs.size() && linger_until == clock::time_point::max()) {
      if (o.notice_wait_ms <= 0)
        break;
      linger_until = clock::now() + std::chrono::milliseconds(o.notice_wait_ms);
    }
    if (o.stop && *o.stop) {
      rep.stopped = true;
      break;
    }
    while (next < o.inputs.size() && unanswered < o.window) {
      auto& job = rep.jobs[next];
      job.request_id = o.request_prefix + std::to_string(next);
      by_request[job.request_id] = next;
      sent[next] = clock::now();
      submit(next);
      ++next;
      ++unanswered;
    }
    const auto now = clock::now();
    for (auto it = retry_at.begin(); it != retry_at.end();) {
      if (it->second > now) {
        ++it;
        continue;
      }
      submit(it->first);
      it = retry_at.erase(it);
    }
    // A silent coordinator may have died with our requests: reconnect and send every
    // unanswered one again. Request ids make that safe: a job is never run or charged twice,
    // and its ACK and RESULT come again.
    if (unanswered > 0 && finished < o.inputs.size() && now - last_heard > std::chrono::milliseconds(o.resend_after_ms)) {
      spdlog::warn("client: no answer for {} ms; reconnecting and resending {} unanswered requests", o.resend_after_ms,
                   unanswered);
      conn = std::make_unique<net::client>(o.endpoint, o.credentials);
      ++rep.reconnects;
      for (std::size_t i = 0; i < next; ++i)
        if (!rep.jobs[i].done && rep.jobs[i].error_code.empty()) {
          retry_at.erase(i);
          submit(i);
          ++rep.resent;
        }
      last_heard = now;
    }
    auto msg = conn->receive(std::chrono::milliseconds(100));
    if (!msg) {
      if (clock::now() - last_progress > std::chrono::milliseconds(o.timeout_ms)) {
        rep.timed_out = true;
        break;
      }
      continue;
    }
    last_heard = clock::now();
    if (!*msg) {
      spdlog::warn("client: undecodable message: {}", msg->err().reason);
      continue;
    }
    const auto& m = msg->value();
    if (m.command == proto::cmd::ack) {
      if (auto a = proto::parse_ack(m); a && by_request.count(a->request_id))
        rep.jobs[by_request[a->request_id]].job_id = a->job_id;
    } else if (m.command == proto::cmd::result) {
      auto r = proto::parse_result(m);
      if (r && by_rerun.count(r->request_id)) { // the re-run of a disputed job of ours
        auto& job = rep.jobs[by_rerun[r->request_id]];
        job.rerun_done = true;
        job.rerun_classes = r->classes;
        job.rerun_receipt = r->receipt;
        continue;
      }
      if (!r || !by_request.count(r->request_id))
        continue;
      auto i = by_request[r->request_id];
      auto& job = rep.jobs[i];
      if (job.done) {
        // A resend brings the RESULT again: it must be the same job and receipt.
        if (r->job_id != job.job_id || verify::receipt_hash(r->receipt) != verify::receipt_hash(job.receipt))
          ++rep.duplicate_results;
        continue;
      }
      last_progress = clock::now();
      retry_at.erase(i);
      job.done = true;
      job.job_id = r->job_id;
      job.classes = r->classes;
      job.receipt = r->receipt;
      job.receipt_valid = verify::verify_receipt(r->receipt) && r->receipt.job_id == r->job_id;
      job.latency_us = std::chrono::duration_cast<std::chrono::microseconds>(clock::now() - sent[i]).count();
      ++rep.results;
      rep.invalid_receipts += job.receipt_valid ? 0 : 1;
      settle(job);
    } else if (m.command == proto::cmd::notice) {
      // The referee ruled the provider of a job of ours wrong: its RESULT is not to be used.
      if (auto n = proto::parse_notice(m); n && by_request.count(n->request_id)) {
        auto& job = rep.jobs[by_request[n->request_id]];
        rep.disputed += job.disputed ? 0 : 1;
        job.disputed = true;
        job.rerun_request_id = n->rerun_request_id;
        if (!n->rerun_request_id.empty())
          by_rerun[n->rerun_request_id] = by_request[n->request_id];
      }
    } else if (m.command == proto::cmd::error) {
      auto e = proto::parse_error(m);
      if (!e || !by_request.count(e->request_id))
        continue;
      auto i = by_request[e->request_id];
      auto& job = rep.jobs[i];
      if (job.done || !job.error_code.empty())
        continue;
      if (retryable(e->code)) {
        retry_at[i] = clock::now() + retry_backoff;
        retry_backoff = std::min(retry_backoff * 2, std::chrono::milliseconds(2000));
        ++rep.retries;
        continue;
      }
      last_progress = clock::now();
      retry_backoff = std::chrono::milliseconds(100);
      job.error_code = e->code;
      job.error_reason = e->reason;
      ++rep.errors;
      settle(job);
    }
  }
  rep.seconds = std::chrono::duration<double>(clock::now() - start).count();
  return rep;
}

} // namespace haca::app
