#pragma once
// A client workload: pipelines SUBMITs over one DEALER (at most `window` unanswered), collects
// ACK / ERROR / RESULT, checks every receipt's signature, measures latency per job. Requests
// refused for now (queue_full, unavailable) are sent again with back-off; when the coordinator
// falls silent the client reconnects and resends every unanswered request under its own id.
#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "net/client.hpp"
#include "proto/commands.hpp"

namespace haca::app {

struct workload_options {
  std::string endpoint = "tcp://127.0.0.1:7700";
  net::client_credentials credentials; // the client's key is the account that pays
  std::string request_prefix = "r";
  std::string model;
  std::string tier = "sampled";
  std::int64_t max_price = 100;
  std::int64_t deadline_ms = 0;
  std::vector<kernels::tensor> inputs; // one job each
  std::size_t window = 1000;
  int timeout_ms = 120000;             // give up waiting after this long without progress
  int resend_after_ms = 3000;          // coordinator silent this long: reconnect, resend the unanswered
  int notice_wait_ms = 0;              // after the last answer, listen this long for NOTICEs (disputes)
  std::function<void(std::size_t finished, std::size_t total)> progress;
  const std::atomic<bool>* stop = nullptr; // set (by a signal) to give up early
};

struct job_outcome {
  std::string request_id;
  std::int64_t job_id = 0;
  bool done = false;                   // a RESULT arrived
  std::string error_code;              // or an ERROR did
  std::string error_reason;
  std::vector<std::int32_t> classes;
  verify::receipt receipt;
  bool receipt_valid = false;
  std::int64_t latency_us = 0;         // SUBMIT sent -> RESULT received
  bool disputed = false;               // a NOTICE said the referee ruled its RESULT wrong
  std::string rerun_request_id;        // the NOTICE's: the job runs again under this request id
  bool rerun_done = false;             // the re-run's RESULT arrived (within notice_wait_ms)
  std::vector<std::int32_t> rerun_classes;
  verify::receipt rerun_receipt;
};

struct workload_report {
  std::vector<job_outcome> jobs;
  double seconds = 0;
  std::size_t results = 0, errors = 0, invalid_receipts = 0;
  std::size_t disputed = 0;            // jobs a NOTICE called disputed (before the run ended)
  std::size_t duplicate_results = 0;   // a RESULT that differs from an earlier one for its request id
  std::size_t retries = 0;             // refusals for now (queue_full, unavailable), sent again
  std::size_t reconnects = 0, resent = 0;
  bool timed_out = false;
  bool stopped = false;
};

workload_report run_workload(const workload_options& o);

// The first `count` images (cycling when count exceeds them) as i8 inputs [1, rows*cols], pixels
// quantized with kernels::quantize_pixels.
std::vector<kernels::tensor> image_inputs(const std::vector<std::uint8_t>& pixels, int image_count, int pixels_per_image,
                                          std::size_t count);
// Random i8 inputs [1, input_dim] from a seed.
std::vector<kernels::tensor> random_inputs(std::size_t count, int input_dim, std::uint64_t seed);
double percentile_ms(std::vector<std::int64_t> latencies_us, double q);

} // namespace haca::app
