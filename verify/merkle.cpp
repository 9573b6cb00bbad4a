#include "verify/merkle.hpp"

#include "verify/hash.hpp"

namespace haca::verify {

namespace {

// Raw bytes of a hex hash; a malformed leaf is hashed as its text so the tree is still defined
// (and cannot collide with a well-formed leaf of the same bytes, since lengths differ).
std::string raw(const std::string& hex) {
  auto r = from_hex(hex);
  return r ? std::move(r.value()) : hex;
}

std::string leaf_node(const std::string& leaf_hex) {
  std::string buf(1, '\x00');
  buf += raw(leaf_hex);
  return std::string(reinterpret_cast<const char*>(sha256(buf).data()), 32);
}

std::string inner_node(const std::string& left, const std::string& right) {
  std::string buf(1, '\x01');
  buf += left;
  buf += right;
  return std::string(reinterpret_cast<const char*>(sha256(buf).data()), 32);
}

std::vector<std::string> leaf_level(const std::vector<std::string>& leaves) {
  std::vector<std::string> level;
  level.reserve(leaves.size());
  for (const auto& l : leaves) level.push_back(leaf_node(l));
  return level;
}

std::vector<std::string> next_level(const std::vector<std::string>& level) {
  std::vector<std::string> up;
  up.reserve((level.size() + 1) / 2);
  for (std::size_t i = 0; i + 1 < level.size(); i += 2) up.push_back(inner_node(level[i], level[i + 1]));
  if (level.size() % 2 == 1) up.push_back(level.back());
  return up;
}

} // namespace

std::string merkle_root(const std::vector<std::string>& leaf_hashes_hex) {
  if (leaf_hashes_hex.empty()) return sha256_hex({});
  auto level = leaf_level(leaf_hashes_hex);
  while (level.size() > 1) level = next_level(level);
  return to_hex(level.front());
}

std::vector<merkle_step> merkle_proof(const std::vector<std::string>& leaf_hashes_hex, std::size_t index) {
  std::vector<merkle_step> proof;
  if (index >= leaf_hashes_hex.size()) return proof;
  auto level = leaf_level(leaf_hashes_hex);
  while (level.size() > 1) {
    const std::size_t sibling = index ^ 1u;
    if (sibling < level.size()) proof.push_back({to_hex(level[sibling]), sibling < index});
    level = next_level(level);
    index /= 2;
  }
  return proof;
}

bool verify_merkle_proof(const std::string& leaf_hash_hex, const std::vector<merkle_step>& proof,
                         const std::string& root_hex) {
  std::string node = leaf_node(leaf_hash_hex);
  for (const auto& step : proof) {
    auto sib = from_hex(step.sibling);
    if (!sib || sib->size() != 32) return false;
    node = step.sibling_on_left ? inner_node(*sib, node) : inner_node(node, *sib);
  }
  return to_hex(node) == root_hex;
}

} // namespace haca::verify
