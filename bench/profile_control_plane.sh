#!/usr/bin/env bash
# CPU cost per job of the control plane, part by part, from a system-wide profile (perf).
#
# Runs build/bench_control_plane with a long window-1000 phase, samples every CPU with
# `perf record -a` for a few seconds of that phase, counts the jobs executed meanwhile (rows
# added to `receipts`) and prints, per process and per part, the CPU microseconds per job.
# A sample is 1/F s of one CPU's time, so (samples / F) / jobs is the CPU time per job.
#
# Parts are by where the time was spent (the function or library at the sample's top):
# Ed25519 (libsodium), SHA-256 (libcrypto), JSON (nlohmann, haca::proto), ZeroMQ (libzmq),
# Postgres client (libpq, libpqxx, haca::db), allocation and copies (libc), CAF, the cores
# (haca::core), the kernel (syscalls, sockets, scheduling), the rest.
#
# usage: bench/profile_control_plane.sh [--build DIR] [--db URL] [--seconds S] [--freq F]
set -euo pipefail

build=build db=postgresql:///haca seconds=6 freq=499
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --db) db=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --freq) freq=$2; shift 2 ;;
    *) echo "usage: $0 [--build DIR] [--db URL] [--seconds S] [--freq F]" >&2; exit 2 ;;
  esac
done
command -v perf >/dev/null || { echo "perf is not installed (Debian: linux-perf); nothing measured" >&2; exit 1; }
[[ -x $build/bench_control_plane ]] || { echo "$build/bench_control_plane is not built" >&2; exit 1; }
if [[ $(cat /proc/sys/kernel/perf_event_paranoid) -gt 0 && $EUID -ne 0 ]]; then
  echo "perf -a needs root or kernel.perf_event_paranoid <= 0" >&2; exit 1
fi

work=$(mktemp -d /tmp/haca-profile-XXXXXX)
executed() { psql "$db" -Atc "select count(*) from receipts"; }

"$build/bench_control_plane" --db "$db" --jobs 60000 --jobs-w1 200 >"$work/bench.out" 2>&1 &
bench=$!
trap 'kill $bench 2>/dev/null || true' EXIT

# Wait for the window-1000 phase: the coordinator is up and receipts grow by thousands a second.
for _ in $(seq 1 120); do
  a=$(executed); sleep 0.5; b=$(executed)
  (( b - a > 300 )) && break
done
coordinator=$(pgrep -f "haca coordinator" | head -1)
providers=$(pgrep -d, -f "haca provider")
[[ -n $coordinator ]] || { echo "no coordinator running; bench output:" >&2; cat "$work/bench.out" >&2; exit 1; }

before=$(executed)
perf record -a -F "$freq" -o "$work/perf.data" -- sleep "$seconds" 2>"$work/perf.err" >/dev/null
after=$(executed)
jobs=$((after - before))
kill $bench 2>/dev/null || true
wait $bench 2>/dev/null || true
trap - EXIT

cpu_model=$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
echo "CPU: $cpu_model, $(nproc) CPUs; ${seconds} s sampled at ${freq} Hz during window 1000: $jobs jobs executed ($((jobs / seconds)) jobs/s)"

perf script -i "$work/perf.data" -F comm,pid,ip,sym,dso 2>/dev/null |
  awk -v coord="$coordinator" -v provs="$providers" -v bench="$bench" -v freq="$freq" -v jobs="$jobs" '
    BEGIN { n = split(provs, p, ","); for (i = 1; i <= n; i++) is_provider[p[i]] = 1 }
    {
      comm = $1; pid = $2
      line = $0
      if (pid == coord) proc = "coordinator"
      else if (pid in is_provider) proc = "providers (2)"
      else if (comm == "postgres") proc = "postgres"
      else if (pid == bench) proc = "bench client"
      else if (pid == 0) proc = "idle"
      else proc = "other"
      part = "rest"
      if (line ~ /libsodium/) part = "Ed25519 (libsodium)"
      else if (line ~ /libcrypto/) part = "SHA-256 (libcrypto)"
      else if (line ~ /nlohmann|haca::proto::/) part = "JSON and protocol"
      else if (line ~ /libzmq/) part = "ZeroMQ"
      else if (line ~ /libpq|haca::db::/) part = "Postgres client"
      else if (line ~ /libcaf/) part = "CAF"
      else if (line ~ /haca::core::/) part = "cores"
      else if (line ~ /\[kernel|\[vdso/) part = "kernel"
      else if (line ~ /libc\.so|libstdc\+\+/) part = "allocation and copies (libc)"
      if (proc != "coordinator" && proc != "providers (2)") part = "-"
      us = 1e6 / freq / (jobs > 0 ? jobs : 1)
      by_proc[proc] += us; by_part[proc "|" part] += us; total += us
    }
    END {
      printf "\nCPU microseconds per job, by process (all CPUs; idle included for scale):\n"
      for (k in by_proc) printf "  %-16s %7.1f us\n", k, by_proc[k] | "sort -k2 -t\"|\""
      close("sort -k2 -t\"|\"")
      printf "\nwithin the coordinator and the providers, by part:\n"
      for (k in by_part) { split(k, a, "|"); if (a[2] != "-") printf "  %-14s %-30s %7.1f us\n", a[1], a[2], by_part[k] | "sort" }
      close("sort")
    }'
echo
echo "perf data and the bench output: $work"
