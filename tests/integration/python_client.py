#!/usr/bin/python3
"""A HACA/1 client written from docs/PROTOCOL.md alone (not from the C++ code).

Submits N jobs pipelined over one DEALER socket, waits for the ACK and the RESULT of each,
and checks every result independently of the coordinator:

  * input_hash  = SHA-256 of the input tensor bytes it sent,
  * output_hash = SHA-256 of the output payload frame,
  * the receipt names the job, the model and the ACKed job id,
  * the receipt hash is recomputed from the signing bytes (section 4.2),
  * the Ed25519 signature verifies against provider_key (PyNaCl),
  * classes[i] is the arg-max of output row i (the first index on ties).

It connects with CurveZMQ (section 1): a fresh CURVE key pair of its own, whose public key
(hex) is its account, and the coordinator's CURVE key derived from its Ed25519 public key.
Then it asks STATUS for one job and prints a JSON summary on stdout. Exit status 0 when
everything checked out, 1 on any mismatch or error, 2 on bad usage or missing modules.

Usage: python_client.py ENDPOINT MODEL_HASH INPUT_DIM N --coordinator-key HEX [--tier T]
                        [--max-price P] [--timeout S] [--seed S]
"""
import argparse
import hashlib
import json
import random
import re
import sys
import time

try:
    import zmq
    import zmq.utils.z85
    from nacl.bindings import crypto_sign_ed25519_pk_to_curve25519
    from nacl.exceptions import BadSignatureError
    from nacl.signing import VerifyKey
except ImportError as e:  # pragma: no cover - reported to the caller
    print(json.dumps({"ok": False, "error": f"missing module: {e} (run deploy/setup.sh)"}))
    sys.exit(2)

TAG = b"HACA/1"
HEX64 = re.compile(r"^[0-9a-f]{64}$")
HEX128 = re.compile(r"^[0-9a-f]{128}$")
DTYPE_SIZE = {"i8": 1, "i32": 4}
RECEIPT_FIELDS = ("job_id", "model_hash", "input_hash", "output_hash", "trace_root",
                  "provider_key", "price", "attempt", "started_at_us", "finished_at_us")


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def signing_bytes(r):
    """Section 4.2: 'haca-receipt-v1' then key=value lines, each ending with a newline."""
    return ("haca-receipt-v1\n" + "".join(f"{k}={r[k]}\n" for k in RECEIPT_FIELDS)).encode("ascii")


def decode(frames):
    """Section 2: tag, command, JSON object header, payload frames described by 'tensors'."""
    if len(frames) < 3:
        raise ValueError(f"reply has {len(frames)} frames")
    tag, command, raw = frames[0], frames[1], frames[2]
    if tag != TAG:
        raise ValueError(f"reply tag {tag!r}")
    header = json.loads(raw.decode("utf-8"))
    if not isinstance(header, dict):
        raise ValueError("reply header is not a JSON object")
    payload = frames[3:]
    tensors = header.get("tensors", [])
    if len(tensors) != len(payload):
        raise ValueError(f"{len(tensors)} tensor descriptors for {len(payload)} payload frames")
    for d, data in zip(tensors, payload):
        n = DTYPE_SIZE[d["dtype"]]
        for dim in d["shape"]:
            n *= dim
        if n != len(data):
            raise ValueError(f"tensor frame has {len(data)} bytes, header declares {d}")
    return command.decode("ascii"), header, payload, tensors


def check_receipt(r, problems, where):
    for k in RECEIPT_FIELDS + ("signature",):
        if k not in r:
            problems.append(f"{where}: receipt lacks '{k}'")
            return False
    for k in ("job_id", "price", "attempt", "started_at_us", "finished_at_us"):
        if not is_int(r[k]) or r[k] < 0:
            problems.append(f"{where}: receipt field '{k}' is not an integer >= 0: {r[k]!r}")
    for k in ("model_hash", "input_hash", "output_hash", "trace_root", "provider_key"):
        if not isinstance(r[k], str) or not HEX64.match(r[k]):
            problems.append(f"{where}: receipt field '{k}' is not 64 lowercase hex: {r[k]!r}")
    if not isinstance(r["signature"], str) or not HEX128.match(r["signature"]):
        problems.append(f"{where}: receipt signature is not 128 lowercase hex")
        return False
    try:
        VerifyKey(bytes.fromhex(r["provider_key"])).verify(signing_bytes(r), bytes.fromhex(r["signature"]))
    except (BadSignatureError, ValueError) as e:
        problems.append(f"{where}: receipt signature does not verify: {e}")
        return False
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("endpoint")
    ap.add_argument("model")
    ap.add_argument("input_dim", type=int)
    ap.add_argument("n", type=int)
    ap.add_argument("--coordinator-key", required=True, help="the coordinator's Ed25519 public key, hex")
    ap.add_argument("--tier", default="sampled", choices=["none", "sampled", "full"])
    ap.add_argument("--max-price", type=int, default=100)
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds without progress before giving up")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    if not HEX64.match(a.model) or not HEX64.match(a.coordinator_key) or a.input_dim < 1 or a.n < 1:
        ap.error("MODEL_HASH and --coordinator-key must be 64 lowercase hex, INPUT_DIM and N at least 1")

    rng = random.Random(a.seed)
    inputs = {f"py-{i}": bytes(rng.randrange(256) for _ in range(a.input_dim)) for i in range(a.n)}
    started = time.monotonic()

    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)  # DEALER, no empty delimiter frame (section 1)
    sock.setsockopt(zmq.LINGER, 0)
    # Section 1: CurveZMQ. The server key is the X25519 form of the coordinator's Ed25519 key;
    # our own public key is our account.
    public, secret = zmq.curve_keypair()
    server = zmq.utils.z85.encode(crypto_sign_ed25519_pk_to_curve25519(bytes.fromhex(a.coordinator_key)))
    sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = public, secret, server
    account = zmq.utils.z85.decode(public).hex()
    sock.connect(a.endpoint)

    for rid, data in inputs.items():  # pipelined: all SUBMITs before any reply
        header = {"client_id": account, "request_id": rid, "model": a.model, "tier": a.tier,
                  "max_price": a.max_price, "deadline_ms": 0,
                  "tensors": [{"dtype": "i8", "shape": [1, a.input_dim]}]}
        sock.send_multipart([TAG, b"SUBMIT", json.dumps(header).encode(), data])

    problems, errors = [], []
    acks, results, receipt_hashes = {}, {}, {}
    last_progress = time.monotonic()

    def receive(timeout_s):
        if not sock.poll(int(timeout_s * 1000)):
            return None
        return decode(sock.recv_multipart())

    while len(results) + len(errors) < a.n:
        if time.monotonic() - last_progress > a.timeout:
            problems.append(f"timed out: {len(acks)} ACKs, {len(results)} RESULTs, {len(errors)} ERRORs of {a.n}")
            break
        msg = receive(0.5)
        if msg is None:
            continue
        last_progress = time.monotonic()
        command, h, payload, tensors = msg
        rid = h.get("request_id", "")
        if command == "ACK":
            if rid not in inputs or not is_int(h.get("job_id")) or h["job_id"] < 0:
                problems.append(f"unexpected ACK {h}")
            elif rid in acks:
                problems.append(f"second ACK for {rid}")
            else:
                acks[rid] = h["job_id"]
        elif command == "ERROR":
            errors.append({"request_id": rid, "code": h.get("code"), "reason": h.get("reason")})
        elif command == "RESULT":
            where = f"{rid} (job {h.get('job_id')})"
            if rid not in inputs:
                problems.append(f"RESULT for unknown request {h}")
                continue
            if rid in results:
                problems.append(f"{where}: second RESULT")
                continue
            r = h.get("receipt", {})
            results[rid] = h.get("job_id")
            if rid in acks and acks[rid] != h.get("job_id"):
                problems.append(f"{where}: ACK said job {acks[rid]}")
            if len(payload) != 1 or tensors[0]["dtype"] != "i8" or len(tensors[0]["shape"]) != 2:
                problems.append(f"{where}: expected one i8 [rows, classes] output tensor, got {tensors}")
                continue
            output = payload[0]
            if not check_receipt(r, problems, where):
                continue
            if r["job_id"] != h.get("job_id"):
                problems.append(f"{where}: receipt job_id {r['job_id']}")
            if r["model_hash"] != a.model:
                problems.append(f"{where}: receipt model_hash {r['model_hash']}")
            if r["input_hash"] != hashlib.sha256(inputs[rid]).hexdigest():
                problems.append(f"{where}: input_hash is not the SHA-256 of the input sent")
            if r["output_hash"] != hashlib.sha256(output).hexdigest():
                problems.append(f"{where}: output_hash is not the SHA-256 of the output frame")
            if r["price"] > a.max_price:
                problems.append(f"{where}: price {r['price']} over max_price {a.max_price}")
            rows, cols = tensors[0]["shape"]
            classes = h.get("classes")
            if not isinstance(classes, list) or len(classes) != rows:
                problems.append(f"{where}: classes {classes!r} for {rows} rows")
            else:
                for i, c in enumerate(classes):
                    row = [b - 256 if b > 127 else b for b in output[i * cols:(i + 1) * cols]]  # signed i8
                    if not is_int(c) or c != row.index(max(row)):  # the first index on ties
                        problems.append(f"{where}: class {c!r} of row {i} is not the arg-max of {row}")
            receipt_hashes[rid] = hashlib.sha256(signing_bytes(r)).hexdigest()
        else:
            problems.append(f"unexpected {command} {h}")

    if len(acks) != a.n and not problems:
        problems.append(f"{a.n - len(acks)} jobs were never ACKed")

    status = None
    if results:
        job_id = sorted(results.values())[0]
        sock.send_multipart([TAG, b"STATUS", json.dumps({"job_id": job_id}).encode()])
        deadline = time.monotonic() + 10
        while status is None and time.monotonic() < deadline:
            msg = receive(0.5)
            if msg is None:
                continue
            command, h, _, _ = msg
            if command == "STATUS" and h.get("job_id") == job_id:
                status = h
            else:
                problems.append(f"unexpected {command} while waiting for STATUS: {h}")
                break
        if status is None:
            problems.append(f"no STATUS reply for job {job_id}")
        else:
            events = status.get("events")
            if not isinstance(status.get("state"), str) or not is_int(status.get("attempt")):
                problems.append(f"STATUS reply lacks state/attempt: {status}")
            if not isinstance(events, list) or not events or not all(
                    isinstance(e, dict) and isinstance(e.get("state"), str) and is_int(e.get("at_us"))
                    for e in events):
                problems.append(f"STATUS events malformed: {events!r}")
            elif any(events[i]["at_us"] > events[i + 1]["at_us"] for i in range(len(events) - 1)):
                problems.append(f"STATUS events not oldest first: {events!r}")

    summary = {
        "ok": not problems and not errors and len(results) == a.n,
        "account": account,
        "jobs": a.n,
        "acked": len(acks),
        "results": len(results),
        "errors": errors,
        "problems": problems,
        "seconds": round(time.monotonic() - started, 3),
        "receipt_hashes": receipt_hashes,
        "status": status,
    }
    print(json.dumps(summary, indent=1, sort_keys=True))
    sock.close()
    ctx.term()
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
