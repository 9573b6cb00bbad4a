#include "db/rows.hpp"

#include <sstream>

#include <nlohmann/json.hpp>

#include "verify/merkle.hpp"

namespace haca::db {

std::vector<std::int64_t> parse_shape(const std::string& text) {
  std::vector<std::int64_t> shape;
  std::size_t pos = 0;
  while (pos < text.size()) {
    auto x = text.find('x', pos);
    shape.push_back(std::stoll(text.substr(pos, x - pos)));
    if (x == std::string::npos)
      break;
    pos = x + 1;
  }
  return shape;
}

std::string bytes_of(const pqxx::field& f) { return f.is_null() ? std::string{} : pqxx::binarystring(f).str(); }

// The receipt and output stored with a job, when the row has them (columns named as in
// find_requests and the snapshot query).
std::optional<core::execution_result> result_of(const pqxx::row& row, std::int64_t job_id) {
  if (row["signature"].is_null())
    return std::nullopt;
  core::execution_result r;
  auto& rc = r.receipt;
  rc.job_id = job_id;
  rc.model_hash = row["r_model_hash"].c_str();
  rc.input_hash = row["r_input_hash"].c_str();
  rc.output_hash = row["output_hash"].c_str();
  rc.trace_root = row["trace_root"].c_str();
  rc.provider_key = row["r_provider_key"].c_str();
  rc.price = row["r_price"].as<std::int64_t>();
  rc.attempt = row["r_attempt"].as<std::int32_t>();
  rc.started_at_us = row["started_at"].as<std::int64_t>();
  rc.finished_at_us = row["finished_at"].as<std::int64_t>();
  rc.signature = row["signature"].c_str();
  r.output.type = kernels::dtype::i8;
  r.output.data = bytes_of(row["output"]);
  if (!row["output_shape"].is_null())
    r.output.shape = parse_shape(row["output_shape"].c_str());
  if (!row["classes"].is_null())
    for (const auto& c : nlohmann::json::parse(row["classes"].c_str()))
      r.classes.push_back(c.get<std::int32_t>());
  // The provider's layer hashes, kept only when their Merkle root is the signed trace root (a
  // row edited by hand gives none: a dispute is then ruled on the whole job).
  if (!row["layer_hashes"].is_null()) {
    std::stringstream in(row["layer_hashes"].c_str());
    for (std::string h; std::getline(in, h, ',');)
      r.layer_hashes.push_back(h);
    if (r.layer_hashes.empty() || verify::merkle_root(r.layer_hashes) != rc.trace_root)
      r.layer_hashes.clear();
  }
  return r;
}

} // namespace haca::db
