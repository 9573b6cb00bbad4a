#!/usr/bin/env bash
# A deployment test: the coordinator, two providers, a verifier and a client, each in its own
# network namespace (its own "host"), joined to the coordinator's namespace by veth pairs with
# private addresses. Nothing routes outside this machine, or between the nodes' namespaces.
#
#   coordinator ns  to-p1 10.213.1.1/30 <-> eth0 10.213.1.2/30  provider p1 ns
#                   to-p2 10.213.2.1/30 <-> eth0 10.213.2.2/30  provider p2 ns
#                   to-v  10.213.3.1/30 <-> eth0 10.213.3.2/30  verifier ns
#                   to-cl 10.213.4.1/30 <-> eth0 10.213.4.2/30  client ns (submit, haca admin)
#
# The coordinator binds 0.0.0.0 in its namespace (client port 7700, node port 7701, HTTP 7702);
# each peer reaches it at the coordinator's end of its own link. Postgres is the machine's own,
# reached over its unix socket (network namespaces do not separate filesystem sockets), in a
# scratch database made and dropped here. Each "host" has its own folder: the only things
# copied between them are coordinator.key.pub and the model file.
#
# Usage: tests/deploy/netns_test.sh PATH-TO-HACA   (as root; ctest runs it as deploy_netns)
# Without root or `ip netns` it fails, saying why; with HACA_NETNS_ALLOW_SKIP=1 it exits 77
# (ctest: skipped) instead.
set -uo pipefail

say() { printf '[netns] %s\n' "$*"; }
started=$(date +%s.%N)
test_deadline=$(($(date +%s) + 100)) # ctest's TIMEOUT (180 s) would SIGKILL us, skipping the cleanup

haca=${1:-}
if [ -z "$haca" ] || [ ! -x "$haca" ]; then
  say "usage: $0 PATH-TO-HACA (got '${haca}', not an executable)"
  exit 1
fi
haca=$(realpath "$haca")
here=$(cd "$(dirname "$0")/../.." && pwd)

# --- prerequisites: fail loudly, skip only when asked to ---------------------------------
unavailable() {
  if [ "${HACA_NETNS_ALLOW_SKIP:-0}" = 1 ]; then
    say "SKIP: $* (HACA_NETNS_ALLOW_SKIP=1)"
    exit 77
  fi
  say "FAIL: $* (set HACA_NETNS_ALLOW_SKIP=1 to skip this test where namespaces are unavailable)"
  exit 1
}
[ "$(id -u)" = 0 ] || unavailable "needs root to make network namespaces (running as $(id -un))"
for tool in ip psql createdb dropdb timeout realpath; do
  command -v "$tool" >/dev/null || unavailable "'$tool' is not installed"
done
probe="haca-$$-probe"
if ! ip netns add "$probe" 2>/dev/null; then
  unavailable "'ip netns add' does not work here"
fi
if ! ip netns exec "$probe" true 2>/dev/null; then
  ip netns del "$probe" 2>/dev/null
  unavailable "'ip netns exec' does not work here"
fi
ip netns del "$probe"

# --- names, folders, cleanup --------------------------------------------------------------
tag="haca-$$"
db="haca_netns_$$"
url="postgresql:///$db"
dir=$(mktemp -d "/tmp/haca-netns-$$.XXXX")
hosts=(coord p1 p2 v cl)
declare -A ns addr pids=() logs=()
for h in "${hosts[@]}"; do ns[$h]="$tag-$h"; done
addr[p1]=1; addr[p2]=2; addr[v]=3; addr[cl]=4 # link 10.213.N.0/30
coord_ip() { echo "10.213.${addr[$1]}.1"; }   # the coordinator's end of a peer's link
peer_ip() { echo "10.213.${addr[$1]}.2"; }
db_made=0
failed=0

stop_all() {
  local name pid
  for name in "${!pids[@]}"; do kill -TERM "${pids[$name]}" 2>/dev/null; done
  for _ in $(seq 1 50); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for name in "${!pids[@]}"; do
    if kill -0 "${pids[$name]}" 2>/dev/null; then
      say "cleanup: $name (pid ${pids[$name]}) ignored SIGTERM for 5 s: SIGKILL"
      kill -KILL "${pids[$name]}" 2>/dev/null
    fi
    wait "${pids[$name]}" 2>/dev/null
  done
  pids=()
}

cleanup() {
  local rc=$?
  [ "$failed" = 1 ] && rc=1
  stop_all
  if [ "$rc" != 0 ]; then
    for name in "${!logs[@]}"; do
      printf '[netns] ---- last lines of %s (%s) ----\n' "$name" "${logs[$name]}"
      tail -n 40 "${logs[$name]}" 2>/dev/null
    done
  fi
  for h in "${hosts[@]}"; do ip netns del "${ns[$h]}" 2>/dev/null; done # takes its veth ends along
  if [ "$db_made" = 1 ]; then
    dropdb --if-exists --force "$db" 2>/dev/null
    [ "$(psql -d postgres -qAtX -c "select count(*) from pg_database where datname = '$db'")" = 0 ] ||
      { say "cleanup: database $db is still there"; rc=1; }
  fi
  rm -rf "$dir"
  local left
  left=$(ip netns list | grep -c "^$tag-")
  [ "$left" != 0 ] && { say "cleanup: $left namespaces left behind"; rc=1; }
  say "cleanup done: namespaces, veths, processes, database $db, $dir"
  say "$([ "$rc" = 0 ] && echo PASS || echo FAIL) in $(awk "BEGIN{printf \"%.1f\", $(date +%s.%N) - $started}") s"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# A run killed with SIGKILL (ctest's timeout) cannot clean up: remove what such a run left
# (namespaces haca-PID-* and the processes in them, databases haca_netns_PID) when its PID no
# longer exists.
for stale in $(ip netns list | grep -o '^haca-[0-9]\+-[a-z0-9]\+'); do
  pid=${stale#haca-}; pid=${pid%%-*}
  kill -0 "$pid" 2>/dev/null && continue
  say "removing namespace $stale left by a killed run (and its processes: $(ip netns pids "$stale" | xargs))"
  for orphan in $(ip netns pids "$stale"); do kill -KILL "$orphan" 2>/dev/null; done
  ip netns del "$stale"
done
for stale in /tmp/haca-netns-[0-9]*.*; do
  pid=${stale#/tmp/haca-netns-}; pid=${pid%%.*}
  [ -d "$stale" ] && ! kill -0 "$pid" 2>/dev/null && rm -rf "$stale"
done
for stale in $(psql -d postgres -qAtX -c "select datname from pg_database where datname ~ '^haca_netns_[0-9]+$'" 2>/dev/null); do
  kill -0 "${stale#haca_netns_}" 2>/dev/null || { say "dropping database $stale left by a killed run"; dropdb --force "$stale"; }
done

fail() { say "FAIL: $*"; failed=1; exit 1; }
# wait_for SECONDS WHAT COMMAND...: polls COMMAND every 0.1 s until it succeeds; fails when time
# is up (SECONDS, or the whole test's 100 s, whichever ends first) or a process exited.
wait_for() {
  local limit=$1 what=$2; shift 2
  local deadline=$(($(date +%s) + limit))
  [ "$deadline" -gt "$test_deadline" ] && deadline=$test_deadline
  local name
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -ge "$deadline" ] && fail "timed out after ${limit} s waiting for $what"
    for name in "${!pids[@]}"; do
      kill -0 "${pids[$name]}" 2>/dev/null || fail "$name exited while waiting for $what"
    done
    sleep 0.1
  done
}
# cap SECONDS: SECONDS, or what is left of the whole test's time if that is less (at least 1).
cap() { local r=$((test_deadline - $(date +%s))); [ "$r" -lt 1 ] && r=1; echo $(($1 < r ? $1 : r)); }
sql() { psql "$url" -qAtX -v ON_ERROR_STOP=1 -c "$1"; }
in_ns() { local h=$1; shift; ip netns exec "${ns[$h]}" "$@"; }
# start NAME HOST ARGS...: runs haca in HOST's namespace, its output in a log.
start() {
  local name=$1 h=$2; shift 2
  logs[$name]="$dir/$h/$name.log"
  HACA_CPU_THREADS=1 OMP_NUM_THREADS=1 ip netns exec "${ns[$h]}" "$haca" "$@" >"${logs[$name]}" 2>&1 &
  pids[$name]=$!
}
alive() { kill -0 "${pids[$1]}" 2>/dev/null || fail "$1 exited early"; }
# reach HOST IP PORT: a TCP connection from HOST's namespace to IP:PORT opens within 3 s.
reach() { in_ns "$1" timeout 3 bash -c "exec 3<>/dev/tcp/$2/$3" 2>/dev/null; }
bytes() { in_ns coord cat "/sys/class/net/$1/statistics/$2"; }

# --- namespaces and links -----------------------------------------------------------------
say "namespaces: ${ns[*]}"
for h in "${hosts[@]}"; do
  ip netns add "${ns[$h]}" || fail "ip netns add ${ns[$h]}"
  ip -n "${ns[$h]}" link set lo up || fail "lo up in ${ns[$h]}"
done
in_ns coord sysctl -qw net.ipv4.ip_forward=0 || fail "ip_forward=0 in the coordinator's namespace"
for h in p1 p2 v cl; do
  # Made inside the namespaces: no interface ever appears in the machine's own namespace.
  ip link add "to-$h" netns "${ns[coord]}" type veth peer name eth0 netns "${ns[$h]}" ||
    fail "veth to-$h <-> ${ns[$h]}/eth0"
  ip -n "${ns[coord]}" addr add "$(coord_ip "$h")/30" dev "to-$h" &&
    ip -n "${ns[$h]}" addr add "$(peer_ip "$h")/30" dev eth0 &&
    ip -n "${ns[coord]}" link set "to-$h" up &&
    ip -n "${ns[$h]}" link set eth0 up || fail "addresses on the $h link"
  say "link $h: ${ns[coord]}/to-$h $(coord_ip "$h")/30 <-> ${ns[$h]}/eth0 $(peer_ip "$h")/30"
done
for h in p1 p2 v cl; do
  [ -z "$(ip -n "${ns[$h]}" route show default)" ] || fail "$h has a default route"
done

# --- Postgres: a scratch database, reached from inside a namespace -------------------------
createdb "$db" || fail "createdb $db (is Postgres running? deploy/setup.sh)"
db_made=1
"$here/deploy/migrate.sh" "$url" 2>/dev/null || fail "migrations on $url"
[ "$(in_ns coord psql "$url" -qAtX -c 'select 1')" = 1 ] ||
  fail "Postgres is not reachable over its unix socket from the coordinator's namespace"
! reach coord 127.0.0.1 5432 ||
  fail "127.0.0.1:5432 answered inside the coordinator's namespace: its loopback is not its own"
say "database $db: migrated; reached from ${ns[coord]} over the unix socket (its 127.0.0.1:5432 is closed)"

# --- hosts' folders: each its own keys and models -------------------------------------------
for h in "${hosts[@]}"; do mkdir -p "$dir/$h/keys" "$dir/$h/models"; done
"$haca" model gen --dims 784,64,10 --name netns-mlp --out "$dir/coord/models/mlp.safetensors" >/dev/null ||
  fail "haca model gen"
for h in p1 p2 v cl; do cp "$dir/coord/models/mlp.safetensors" "$dir/$h/models/"; done

# --- the coordinator ----------------------------------------------------------------------
token="netns-read-token-$$-0123456789"
start coordinator coord coordinator --db "$url" --bind 0.0.0.0 --client-port 7700 --node-port 7701 \
  --http-port 7702 --read-token "$token" --key "$dir/coord/keys/coordinator.key" --models "$dir/coord/models" \
  --demo-faucet 1000000000 --min-stake 0 --sample-rate 0.5 --heartbeat-ms 500 --batch-ms 100 --drain-ms 1000
wait_for 10 "the coordinator's public key" test -s "$dir/coord/keys/coordinator.key.pub"
listening() { reach coord "$(coord_ip p1)" 7701 && reach coord "$(coord_ip cl)" 7700; }
wait_for 10 "the coordinator to listen on 7700 and 7701" listening
alive coordinator
coordinator_key=$(cat "$dir/coord/keys/coordinator.key.pub")
for h in p1 p2 v cl; do cp "$dir/coord/keys/coordinator.key.pub" "$dir/$h/keys/"; done
say "coordinator in ${ns[coord]} on 0.0.0.0:7700/7701/7702, key ${coordinator_key:0:16}..."

# --- isolation: each peer reaches its end of its own link, nothing else -------------------
for h in p1 p2 v cl; do
  reach "$h" "$(coord_ip "$h")" 7701 ||
    fail "$h cannot reach the coordinator at $(coord_ip "$h"):7701"
done
for target in "$(peer_ip p2):22" "$(coord_ip p2):7701" "$(coord_ip cl):7700" "192.0.2.1:80" "127.0.0.1:7701"; do
  ! reach p1 "${target%:*}" "${target#*:}" ||
    fail "p1 reached $target: it should reach only $(coord_ip p1)"
done
say "isolation: each peer reaches the coordinator on its own link; p1 reaches neither p2, the other links, nor outside"

# --- providers and the verifier, each in its own namespace -----------------------------------
node() { # node ROLE HOST
  start "$2" "$2" "$1" --connect "tcp://$(coord_ip "$2"):7701" --coordinator-key "$dir/$2/keys/coordinator.key.pub" \
    --models "$dir/$2/models" --name "$tag-$2" --key "$dir/$2/keys/$2.key" "${@:3}"
}
node provider p1 --price 10 --credit 8
node provider p2 --price 10 --credit 8
node verifier v
registered() { test "$(sql "select count(*) from providers where name like '$tag-%'")" = 3; }
wait_for 20 "both providers and the verifier to register" registered
for name in p1 p2 v; do alive "$name"; done
declare -A key
for h in p1 p2 v; do key[$h]=$(cut -c65-128 "$dir/$h/keys/$h.key"); done
say "registered: p1 ${key[p1]:0:16}..., p2 ${key[p2]:0:16}..., verifier ${key[v]:0:16}..."

# --- traffic: a workload from the client's namespace ----------------------------------------
declare -A before
for h in p1 p2 v cl; do before[$h]=$(( $(bytes "to-$h" tx_bytes) + $(bytes "to-$h" rx_bytes) )); done
jobs=300
say "submitting $jobs jobs from ${ns[cl]} to tcp://$(coord_ip cl):7700"
logs[submit]="$dir/cl/submit.log"
in_ns cl timeout "$(cap 40)" "$haca" submit --connect "tcp://$(coord_ip cl):7700" --coordinator-key "$dir/cl/keys/coordinator.key.pub" \
  --key "$dir/cl/keys/client.key" --model "$dir/cl/models/mlp.safetensors" --random "$jobs" --json \
  >"$dir/cl/results.json" 2>"${logs[submit]}"
rc=$?
[ "$rc" = 0 ] || fail "haca submit exited $rc"
[ "$(grep -c . "$dir/cl/results.json")" = "$jobs" ] || fail "expected $jobs JSON lines from haca submit"
valid=$(grep -c '"receipt_valid":true' "$dir/cl/results.json")
[ "$valid" = "$jobs" ] || fail "$valid of $jobs results came with a valid receipt"
say "client: $jobs results, each with a valid receipt"

# --- checks --------------------------------------------------------------------------------
settled() { test "$(sql "select count(*) from jobs where state = 'SETTLED'")" = "$jobs"; }
wait_for 20 "all $jobs jobs to be SETTLED" settled
[ "$(sql "select count(*) from jobs")" = "$jobs" ] || fail "the jobs table holds $(sql "select count(*) from jobs") jobs"
declare -A ran
for h in p1 p2; do
  ran[$h]=$(sql "select count(*) from jobs where provider_key = '${key[$h]}'")
  [ "${ran[$h]}" -gt 0 ] || fail "provider $h ran no job"
done
[ $((ran[p1] + ran[p2])) = "$jobs" ] || fail "p1 ran ${ran[p1]} and p2 ${ran[p2]}: not all $jobs"
[ "$(sql "select count(*) from receipts")" -ge "$jobs" ] || fail "fewer receipts than jobs"
verified=$(sql "select count(distinct job_id) from job_events where state = 'VERIFIED'")
[ "$verified" -gt 0 ] || fail "the verifier judged no job (sample rate 0.5)"
say "jobs: p1 ran ${ran[p1]}, p2 ran ${ran[p2]}, all SETTLED; the verifier verified $verified"

# The admin API over HTTP, from the client's namespace.
for h in p1 p2; do
  n=$(in_ns cl timeout "$(cap 10)" "$haca" admin --url "http://$(coord_ip cl):7702" --token "$token" --json --limit 1000 \
    jobs --provider "${key[$h]}" | grep -c .)
  [ "$n" = "${ran[$h]}" ] || fail "haca admin jobs --provider $h: $n lines, the database says ${ran[$h]}"
done
say "admin API at http://$(coord_ip cl):7702 from ${ns[cl]}: the same job counts per provider"

# Traffic crossed the veths: at least one 784-byte input per job went down each provider's link.
for h in p1 p2 v cl; do
  grew=$(( $(bytes "to-$h" tx_bytes) + $(bytes "to-$h" rx_bytes) - before[$h] ))
  case $h in p1 | p2) least=$((ran[$h] * 784)) ;; cl) least=$((jobs * 784)) ;; v) least=$((verified * 784)) ;; esac
  [ "$grew" -ge "$least" ] || fail "link $h carried $grew bytes during the workload, expected at least $least"
  say "link $h carried $grew bytes during the workload (at least $least expected)"
done

logs[audit]="$dir/coord/audit.log"
in_ns coord timeout "$(cap 20)" "$haca" audit --db "$url" --coordinator-key "$coordinator_key" >"${logs[audit]}" 2>&1 ||
  fail "haca audit found trouble (exit $?)"
say "audit: clean: $(head -n 1 "${logs[audit]}")"
for name in coordinator p1 p2 v; do alive "$name"; done
exit 0
