#pragma once
// Reading the rows the store writes back into core types (shared by the store and the reader).
#include <optional>
#include <pqxx/pqxx>
#include <string>
#include <vector>

#include "core/records.hpp"

namespace haca::db {

std::vector<std::int64_t> parse_shape(const std::string& text); // "1x784"
std::string bytes_of(const pqxx::field& f);                      // a bytea, "" when null

// The receipt and output stored with a job, when the row has them. Columns: classes, output,
// output_shape, r_model_hash, r_input_hash, output_hash, trace_root, r_provider_key, r_price,
// r_attempt, started_at, finished_at, signature (receipts joined to jobs).
std::optional<core::execution_result> result_of(const pqxx::row& row, std::int64_t job_id);

// Those columns, for a select over `jobs j left join receipts r`.
inline constexpr const char* result_columns =
    "r.classes, r.output, r.output_shape, r.model_hash as r_model_hash, r.input_hash as r_input_hash, "
    "r.output_hash, r.trace_root, r.provider_key as r_provider_key, r.price as r_price, r.attempt as r_attempt, "
    "r.started_at, r.finished_at, r.signature, r.layer_hashes";

} // namespace haca::db
