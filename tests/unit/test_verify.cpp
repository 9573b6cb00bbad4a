#include <doctest/doctest.h>
#include <sodium.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <functional>
#include <fstream>
#include <string>
#include <vector>

#include "proto/commands.hpp"
#include "verify/hash.hpp"
#include "verify/merkle.hpp"
#include "verify/receipt.hpp"
#include "verify/sampling.hpp"
#include "verify/signing.hpp"

using namespace haca;
using namespace haca::verify;

namespace {

std::string raw_digest(std::string_view data) {
  const digest d = sha256(data);
  return std::string(reinterpret_cast<const char*>(d.data()), d.size());
}

// The tree rules written out by hand: leaf = H(0x00 || leaf), node = H(0x01 || l || r).
std::string hand_leaf(const std::string& hex) { return raw_digest(std::string(1, '\0') + from_hex(hex).value()); }
std::string hand_node(const std::string& l, const std::string& r) { return raw_digest(std::string(1, '\1') + l + r); }

std::vector<std::string> leaves(int n) {
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) out.push_back(sha256_hex("leaf " + std::to_string(i)));
  return out;
}

receipt sample_receipt() {
  receipt r;
  r.job_id = 42;
  r.model_hash = sha256_hex("model");
  r.input_hash = sha256_hex("input");
  r.output_hash = sha256_hex("output");
  r.trace_root = sha256_hex("trace");
  r.price = 1500;
  r.attempt = 1;
  r.started_at_us = 1700000000000000;
  r.finished_at_us = 1700000000001234;
  return r;
}

} // namespace

TEST_CASE("sha256 matches the FIPS test vectors and hex round-trips") {
  CHECK(sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(sha256_hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(to_hex(std::string_view("\x00\xff\x10", 3)) == "00ff10");
  CHECK(from_hex("00ff10").value() == std::string("\x00\xff\x10", 3));
  CHECK(from_hex("00FF").value() == std::string("\x00\xff", 2));
  CHECK_FALSE(from_hex("abc").ok());
  CHECK_FALSE(from_hex("zz").ok());
  CHECK(is_hash_hex(sha256_hex("x")));
  CHECK_FALSE(is_hash_hex(std::string(63, 'a')));
  CHECK_FALSE(is_hash_hex(std::string(64, 'A')));
}

TEST_CASE("merkle roots of 0, 1, 2, 3, 5 and 8 leaves equal a hand computation") {
  CHECK(merkle_root({}) == sha256_hex(""));
  auto l = leaves(8);
  std::vector<std::string> h;
  for (const auto& x : l) h.push_back(hand_leaf(x));
  CHECK(merkle_root(leaves(1)) == to_hex(h[0]));
  CHECK(merkle_root(leaves(2)) == to_hex(hand_node(h[0], h[1])));
  CHECK(merkle_root(leaves(3)) == to_hex(hand_node(hand_node(h[0], h[1]), h[2])));
  const auto n01 = hand_node(h[0], h[1]), n23 = hand_node(h[2], h[3]), n45 = hand_node(h[4], h[5]),
             n67 = hand_node(h[6], h[7]);
  CHECK(merkle_root(leaves(5)) == to_hex(hand_node(hand_node(n01, n23), h[4])));
  CHECK(merkle_root(leaves(8)) == to_hex(hand_node(hand_node(n01, n23), hand_node(n45, n67))));
  CHECK(merkle_root(leaves(5)) != merkle_root(leaves(4)));
}

TEST_CASE("every merkle proof verifies and a tampered proof fails") {
  for (int n : {1, 2, 3, 5, 7, 8, 13}) {
    const auto l = leaves(n);
    const auto root = merkle_root(l);
    for (int i = 0; i < n; ++i) {
      const auto proof = merkle_proof(l, static_cast<std::size_t>(i));
      CHECK(verify_merkle_proof(l[i], proof, root));
      CHECK_FALSE(verify_merkle_proof(sha256_hex("other"), proof, root));
      CHECK_FALSE(verify_merkle_proof(l[i], proof, sha256_hex("other root")));
      if (!proof.empty()) {
        auto bad = proof;
        bad[0].sibling = sha256_hex("forged");
        CHECK_FALSE(verify_merkle_proof(l[i], bad, root));
        auto flipped = proof;
        flipped.back().sibling_on_left = !flipped.back().sibling_on_left;
        CHECK_FALSE(verify_merkle_proof(l[i], flipped, root));
        auto shorter = proof;
        shorter.pop_back();
        CHECK_FALSE(verify_merkle_proof(l[i], shorter, root));
      }
    }
  }
  CHECK(merkle_proof(leaves(3), 3).empty());
}

TEST_CASE("a signature verifies and fails for a tampered message, another key or a forged signature") {
  const key_pair k = generate_key_pair();
  CHECK(is_hash_hex(k.public_key_hex));
  CHECK(k.secret_key.size() == 64);
  const std::string sig = sign_hex(k, "hello");
  CHECK(sig.size() == 128);
  CHECK(verify_signature_hex(k.public_key_hex, "hello", sig));
  CHECK_FALSE(verify_signature_hex(k.public_key_hex, "hellp", sig));
  CHECK_FALSE(verify_signature_hex(generate_key_pair().public_key_hex, "hello", sig));
  std::string forged = sig;
  forged[0] = forged[0] == '0' ? '1' : '0';
  CHECK_FALSE(verify_signature_hex(k.public_key_hex, "hello", forged));
  CHECK_FALSE(verify_signature_hex(k.public_key_hex, "hello", "zz"));
  CHECK_FALSE(verify_signature_hex("not hex", "hello", sig));
}

TEST_CASE("load_or_create_key creates a 0600 key file in new directories and loads the same key again") {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("haca-key-test-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  const std::string path = (dir / "a" / "b" / "node.key").string();
  auto created = load_or_create_key(path);
  REQUIRE(created.ok());
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  auto loaded = load_or_create_key(path);
  REQUIRE(loaded.ok());
  CHECK(loaded->public_key_hex == created->public_key_hex);
  CHECK(loaded->secret_key == created->secret_key);
  CHECK(verify_signature_hex(created->public_key_hex, "m", sign_hex(*loaded, "m")));
  {
    std::ofstream(path, std::ios::trunc) << "not a key\n";
  }
  auto bad = load_or_create_key(path);
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.err().code == errc::io_error);
  fs::remove_all(dir);
}

TEST_CASE("receipt signing bytes follow the documented layout") {
  receipt r = sample_receipt();
  r.provider_key = "pk";
  CHECK(receipt_signing_bytes(r) ==
        "haca-receipt-v1\njob_id=42\nmodel_hash=" + r.model_hash + "\ninput_hash=" + r.input_hash +
            "\noutput_hash=" + r.output_hash + "\ntrace_root=" + r.trace_root +
            "\nprovider_key=pk\nprice=1500\nattempt=1\nstarted_at_us=1700000000000000\n"
            "finished_at_us=1700000000001234\n");
  CHECK(receipt_hash(r) == sha256_hex(receipt_signing_bytes(r)));
}

TEST_CASE("a signed receipt verifies and tampering with any field breaks it") {
  const key_pair k = generate_key_pair();
  receipt r = sample_receipt();
  sign_receipt(r, k);
  CHECK(r.provider_key == k.public_key_hex);
  CHECK(verify_receipt(r));
  const std::string other = sha256_hex("tampered");
  std::vector<std::function<void(receipt&)>> tamper = {
      [](receipt& x) { x.job_id += 1; },
      [&](receipt& x) { x.model_hash = other; },
      [&](receipt& x) { x.input_hash = other; },
      [&](receipt& x) { x.output_hash = other; },
      [&](receipt& x) { x.trace_root = other; },
      [](receipt& x) { x.provider_key = generate_key_pair().public_key_hex; },
      [](receipt& x) { x.price -= 1; },
      [](receipt& x) { x.attempt += 1; },
      [](receipt& x) { x.started_at_us += 1; },
      [](receipt& x) { x.finished_at_us += 1; },
      [](receipt& x) { x.signature[5] = x.signature[5] == 'a' ? 'b' : 'a'; },
      [](receipt& x) { x.signature.clear(); },
  };
  for (std::size_t i = 0; i < tamper.size(); ++i) {
    receipt t = r;
    tamper[i](t);
    CHECK_MESSAGE(!verify_receipt(t), "tamper #" << i);
  }
}

TEST_CASE("a signed block verifies, chains by hash, and tampering breaks it") {
  const key_pair k = generate_key_pair();
  block b;
  b.height = 0;
  b.prev_hash = std::string(64, '0');
  b.batch_root = merkle_root(leaves(3));
  b.receipts = 3;
  b.total_amount = 4500;
  b.created_at_us = 1700000000000000;
  sign_block(b, k);
  CHECK(b.signer_key == k.public_key_hex);
  CHECK(verify_block(b));
  CHECK(block_signing_bytes(b) == "haca-block-v1\nheight=0\nprev_hash=" + b.prev_hash + "\nbatch_root=" +
                                      b.batch_root + "\nreceipts=3\ntotal_amount=4500\ncreated_at_us=1700000000000000\n"
                                      "signer_key=" + k.public_key_hex + "\n");
  block next = b;
  next.height = 1;
  next.prev_hash = block_hash(b);
  sign_block(next, k);
  CHECK(verify_block(next));
  CHECK(next.prev_hash == sha256_hex(block_signing_bytes(b)));
  block t = b;
  t.total_amount += 1;
  CHECK_FALSE(verify_block(t));
  t = b;
  t.receipts = 4;
  CHECK_FALSE(verify_block(t));
  t = b;
  t.prev_hash = std::string(64, '1');
  CHECK_FALSE(verify_block(t));
}

TEST_CASE("sampling with p=0 picks none, p=1 all, p=0.1 about a tenth, the same way every time") {
  int none = 0, all = 0, tenth = 0, tenth_again = 0, other_secret_differs = 0;
  for (int i = 0; i < 10000; ++i) {
    const std::string h = sha256_hex("receipt " + std::to_string(i));
    none += sampled("secret", h, 0.0);
    all += sampled("secret", h, 1.0);
    const bool s = sampled("secret", h, 0.1);
    tenth += s;
    tenth_again += sampled("secret", h, 0.1);
    other_secret_differs += s != sampled("another secret", h, 0.1);
  }
  CHECK(none == 0);
  CHECK(all == 10000);
  CHECK(tenth >= 800);
  CHECK(tenth <= 1200);
  CHECK(tenth_again == tenth);
  CHECK(other_secret_differs > 500);
  CHECK_FALSE(sampled("secret", sha256_hex("x"), -1.0));
  CHECK(sampled("secret", sha256_hex("x"), 2.0));
}

TEST_CASE("a node's CurveZMQ key is derived from its Ed25519 key, and a HELLO is bound to it") {
  const auto a = generate_key_pair();
  const auto b = generate_key_pair();
  const auto ca = curve_public_hex(a.public_key_hex);
  REQUIRE(ca.size() == 64);
  CHECK(ca != curve_public_hex(b.public_key_hex));
  CHECK(ca == curve_public_hex(a.public_key_hex)); // a function of the key alone
  CHECK(curve_public_hex("not a key").empty());
  // The secret half matches the public half: X25519(secret, base point) is the public key.
  const auto secret = curve_secret(a);
  REQUIRE(secret.size() == crypto_scalarmult_curve25519_BYTES);
  unsigned char pub[crypto_scalarmult_curve25519_BYTES];
  REQUIRE(crypto_scalarmult_curve25519_base(pub, reinterpret_cast<const unsigned char*>(secret.data())) == 0);
  CHECK(to_hex(std::string_view(reinterpret_cast<const char*>(pub), sizeof pub)) == ca);

  proto::capabilities caps;
  caps.public_key = a.public_key_hex;
  CHECK(proto::check_hello_bound(caps, ca).ok());
  CHECK(proto::check_hello_bound(caps, curve_public_hex(b.public_key_hex)).err().code == errc::bad_signature);
  CHECK(proto::check_hello_bound(caps, "").err().code == errc::bad_signature); // no CurveZMQ: never bound
}
