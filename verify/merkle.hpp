#pragma once
// SHA-256 Merkle trees over hex hashes (trace roots, settlement batch roots).
// leaf  = SHA-256(0x00 || raw leaf hash bytes)
// node  = SHA-256(0x01 || left || right)
// A level with an odd count carries its last node up unchanged. The root of no leaves is
// SHA-256 of the empty string. Domain separation (0x00/0x01) stops a leaf posing as a node.
#include <string>
#include <vector>

namespace haca::verify {

struct merkle_step {
  std::string sibling; // hex hash of the sibling node
  bool sibling_on_left = false;
};

std::string merkle_root(const std::vector<std::string>& leaf_hashes_hex);
// Path from leaf `index` to the root (steps where a node was carried up are omitted).
std::vector<merkle_step> merkle_proof(const std::vector<std::string>& leaf_hashes_hex, std::size_t index);
bool verify_merkle_proof(const std::string& leaf_hash_hex, const std::vector<merkle_step>& proof,
                         const std::string& root_hex);

} // namespace haca::verify
