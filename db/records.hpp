#pragma once
// Rows the coordinator writes: plain data shared by the actors and the Postgres store.
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/tensor.hpp"
#include "market/ledger.hpp"
#include "proto/commands.hpp"
#include "verify/receipt.hpp"

namespace haca::db {

struct job_record {
  std::string client_id;
  std::string request_id;
  std::string model;
  std::string tier;
  std::int64_t max_price = 0;
  std::int64_t deadline_us = 0; // absolute unix microseconds, 0 = none
  kernels::tensor input;
  std::string input_hash;
  std::int64_t submitted_us = 0;
};

struct job_event {
  std::int64_t job_id = 0;
  std::string state;
  std::string detail;
  std::int32_t attempt = 0;
  std::string provider_key; // "" = unchanged
  std::int64_t at_us = 0;
};

struct settled_item {
  std::int64_t job_id = 0;
  std::string client_id;
  verify::receipt receipt;
  std::string verdict;      // verified | unsampled | mismatch
  std::vector<market::posting> postings; // sum to zero; empty when nothing is charged
};

struct settlement {
  verify::block block;
  std::vector<settled_item> items;
};

struct startup_state {
  std::int64_t next_height = 0;
  std::string prev_hash;
  std::vector<std::pair<std::string, std::int64_t>> client_balances; // client id, micro-units
};

} // namespace haca::db
