#!/usr/bin/env bash
# The full-size run of the cheat and lie test switches (issue 9, item 4), from the repository
# root after a build: a coordinator, a provider (cpu backend, --cheat-rate CHEAT, price 10), an
# honest provider (cpu backend, price 20: it runs the re-runs of disputed jobs, and what the
# cheaper one has no credit for) and a verifier (reference backend, --lie-rate LIE) on ports
# 7810/7811, JOBS random jobs of tier
# "sampled" at sample rate P, in a scratch database (needs the local Postgres superuser, as
# deploy/setup.sh sets it up). Both nodes stake STAKE (default 10^6 micro-units, deposited to
# their node accounts with a reserve of 1000 stakes: a lying verifier loses its whole stake at
# every lie, and tops it up from there). It prints how many cheats were
# sampled, disputed and slashed, how many lies were ruled against the verifier and slashed, the
# stake accounts, and the audit. Defaults: JOBS=10000 P=0.2 CHEAT=0.1 LIE=0.1. The honest
# run: CHEAT=0 LIE=0 P=1.0.
set -euo pipefail
trap 'pkill -f "$D/" || true' EXIT
H=${HACA:-$PWD/build/haca}
D=${WORK:-/tmp/haca-cheaters}
STAKE=${STAKE:-1000000}
rm -rf $D; mkdir -p $D/models $D/keys $D/logs
DB=haca_fig_$$
runuser -u postgres -- createdb -O haca $DB
URL=postgresql:///$DB
for f in $PWD/db/migrations/*.sql; do psql -q -d $URL -f $f >/dev/null; done
$H model gen --out $D/models/mlp.safetensors > /dev/null
$H coordinator --db $URL --models $D/models --client-port 7810 --node-port 7811 --sample-rate ${P:-0.2} --demo-faucet 100000000000 --max-verifier-lies 0 --min-stake $STAKE --key $D/keys/coordinator.key > $D/logs/coordinator.log 2>&1 &
sleep 1
$H provider --connect tcp://127.0.0.1:7811 --coordinator-key $D/keys/coordinator.key.pub --models $D/models --name p1 --key $D/keys/p1.key --backend cpu --cheat-rate ${CHEAT:-0.1} > $D/logs/p1.log 2>&1 &
$H provider --connect tcp://127.0.0.1:7811 --coordinator-key $D/keys/coordinator.key.pub --models $D/models --name p2 --key $D/keys/p2.key --backend cpu --price 20 > $D/logs/p2.log 2>&1 &
$H verifier --connect tcp://127.0.0.1:7811 --coordinator-key $D/keys/coordinator.key.pub --models $D/models --name v1 --key $D/keys/v1.key --backend reference --lie-rate ${LIE:-0.1} > $D/logs/v1.log 2>&1 &
sleep 1
# The nodes are refused until their stake can be held: fund their node accounts (the key file is
# seed||public key, in hex), and they join at their next HELLO.
for n in p1 p2 v1; do
  $H deposit --connect tcp://127.0.0.1:7810 --coordinator-key $D/keys/coordinator.key.pub --key $D/keys/coordinator.key --node --account $(cut -c65-128 $D/keys/$n.key) --amount $((STAKE * 1001)) > /dev/null
done
for i in $(seq 1 100); do
  [ "$(psql -qAtX -d $URL -c "select count(*) from providers")" = 3 ] && break
  sleep 0.2
done
$H submit --connect tcp://127.0.0.1:7810 --key $D/keys/client.key --coordinator-key $D/keys/coordinator.key.pub --model $D/models/mlp.safetensors --random ${JOBS:-10000} --tier sampled --json > $D/results.jsonl 2> $D/submit.err || true
q() { psql -qAtX -d $URL -c "$1"; }
for i in $(seq 1 600); do # settlement runs off the client's path: wait for every job to end
  [ "$(q "select count(*) from jobs where state not in ('SETTLED','FAILED','EXPIRED')")" = 0 ] && break
  sleep 0.5
done
echo "jobs final: $(q "select count(*) from jobs where state in ('SETTLED','FAILED','EXPIRED')") of $(q "select count(*) from jobs")"
cheats=$(grep -c "cheat-rate: job" $D/logs/p1.log || true)
lies=$(grep -c "lie-rate: job" $D/logs/v1.log || true)
echo "cheats: $cheats, lies: $lies"
echo "verdicts: $(q "select string_agg(verdict || ' ' || n, ', ') from (select verdict, count(*) n from jobs where verdict is not null group by verdict) x")"
echo "rulings: $(q "select coalesce(string_agg(loser || ' ' || n, ', '), 'none') from (select loser, count(*) n from disputes group by loser) x")"
{ grep -o "cheat-rate: job [0-9]*" $D/logs/p1.log || true; } | awk '{print $3}' | sort > $D/cheats.txt
{ grep -o "lie-rate: job [0-9]*" $D/logs/v1.log || true; } | awk '{print $3}' | sort > $D/lies.txt
q "select id from jobs where verdict = 'mismatch' order by 1" | sort > $D/disputed.txt
q "select job_id from disputes where loser in ('verifier','both') order by 1" | sort > $D/verifier_lost.txt
q "select id from jobs where verdict in ('verified','mismatch') order by 1" | sort > $D/sampled.txt
echo "disputed not cheated: $(comm -23 $D/disputed.txt $D/cheats.txt | wc -l)"
echo "sampled cheats: $(comm -12 $D/sampled.txt $D/cheats.txt | wc -l), of them disputed: $(comm -12 $D/disputed.txt $D/cheats.txt | wc -l)"
echo "slashed providers: $(q "select count(*) from postings where ref like 'slash:%:provider'"), verifiers: $(q "select count(*) from postings where ref like 'slash:%:verifier'")"
echo "stakes: $(q "select string_agg(id || ' ' || balance, ', ') from accounts where id like 'stake:%'")"
echo "compensation paid to the client: $(q "select coalesce(sum(amount), 0) from postings where ref like 'slash:%' and account like 'client:%'"), rewards to the verifier: $(q "select coalesce(sum(amount), 0) from postings where memo = 'slash: verifier''s reward'")"
echo "re-runs of disputed jobs: $(q "select count(*) from jobs where client_req_id like 'rerun:%'"), settled verified or unsampled: $(q "select count(*) from jobs j where j.client_req_id like 'rerun:%' and j.state = 'SETTLED' and j.verdict in ('verified', 'unsampled')")"
echo "lies (on jobs the verifier judged): $(wc -l < $D/lies.txt), ruled against the verifier: $(comm -12 $D/lies.txt $D/verifier_lost.txt | wc -l), rulings against the verifier without a lie: $(comm -13 $D/lies.txt $D/verifier_lost.txt | wc -l)"
$H audit --db $URL --coordinator-key $(cat $D/keys/coordinator.key.pub) 2>&1 | tail -3
pkill -f "$D/" || true
wait 2>/dev/null || true
runuser -u postgres -- dropdb $DB
