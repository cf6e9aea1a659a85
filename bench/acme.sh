#!/usr/bin/env bash
# bench/acme.sh --cli PATH --provider PATH [--runs N] --out ROWS.jsonl
#
# ACME enrollment on a loopback pebble, for ci/bench: the wall time of a
# whole `mtls-keystore enroll --acme` (process start, key generation in a
# SoftHSM token, the account reused, order, http-01 validation by the
# built-in responder, finalize with the CSR signed in the token, download,
# import into the token and the files) and the signatures it made in
# hardware (the CLI counts them: account-key JWS and the CSR), N times;
# then Debian's lego doing the same order (one DNS name, http-01 on the
# same port, EC P-256, its account reused, its key on disk) against the
# same pebble, N times. The first enrollment of each registers the account
# and is not counted. Appends one JSON row per client to ROWS.jsonl.
#
# pebble and the token come from the test helpers (tests/lib/common.sh,
# tests/lib/acme.sh): free loopback ports, everything stopped by PID.
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
RUNS=10 OUT=
while [ $# -gt 0 ]; do
    case $1 in
    --cli) MTLSKS_CLI=$2; shift ;;
    --provider) MTLSKS_PROVIDER=$2; shift ;;
    --runs) RUNS=$2; shift ;;
    --out) OUT=$2; shift ;;
    *)
        echo "usage: $0 --cli PATH --provider PATH [--runs N] --out ROWS.jsonl" >&2
        exit 2
        ;;
    esac
    shift
done
[ -n "$OUT" ] && [ -x "${MTLSKS_CLI:-}" ] && [ -r "${MTLSKS_PROVIDER:-}" ] || {
    echo "usage: $0 --cli PATH --provider PATH [--runs N] --out ROWS.jsonl" >&2
    exit 2
}
export MTLSKS_CLI MTLSKS_PROVIDER
TEST_NAME=bench-acme
# shellcheck source=../tests/lib/common.sh
. "$SRC/tests/lib/common.sh"
# shellcheck source=../tests/lib/acme.sh
. "$SRC/tests/lib/acme.sh"

new_workdir
# What plain_ossl reads: no provider but the default.
MTLSKS_FIXTURE=$WORK/fixture
mkdir -p "$MTLSKS_FIXTURE"
: >"$MTLSKS_FIXTURE/plain.cnf"
require_softhsm
new_token bench
acme_start

now() { date +%s.%N; }
median() { sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

# mtls-keystore: the account key and account made by a first enrollment.
acme_enroll warm
: >"$WORK/ours.txt"
for i in $(seq "$RUNS"); do
    acme_enroll_cmd "m$i"
    t0=$(now)
    run_ok "ours-$i" "${ACME_CMD[@]}"
    t1=$(now)
    sigs=$(sed -n 's/^enrolled: .* \([0-9][0-9]*\) signatures in hardware.*/\1/p' "$WORK/ours-$i.out")
    echo "$(awk "BEGIN {print $t1 - $t0}") ${sigs:-0}" >>"$WORK/ours.txt"
done

# lego: its account registered by a first run too.
lego_run() {
    LEGO_CA_CERTIFICATES=$ACME_CA_BUNDLE lego --server "$ACME_DIR" --email bench@example.test \
        --accept-tos --key-type ec256 --domains "$1" --http --http.port "127.0.0.1:$ACME_HTTP_PORT" \
        --path "$WORK/lego" run
}
have_lego=0
: >"$WORK/lego.txt"
if command -v lego >/dev/null 2>&1; then
    have_lego=1
    run_ok lego-warm lego_run lwarm.test
    for i in $(seq "$RUNS"); do
        t0=$(now)
        run_ok "lego-$i" lego_run "l$i.test"
        t1=$(now)
        echo "$(awk "BEGIN {print $t1 - $t0}") 0" >>"$WORK/lego.txt"
    done
fi

# row IMPL FILE NOTE: the JSON row of one client.
row() {
    local impl=$1 file=$2 note=$3 walls sigs
    walls=$(cut -d' ' -f1 "$file" | paste -sd, -)
    sigs=$(cut -d' ' -f2 "$file" | paste -sd, -)
    printf '{"bench":"acme","impl":"%s","alg":"ec","threads":1,"note":"%s","runs":%d,' \
        "$impl" "$note" "$(wc -l <"$file")"
    printf '"median_s":%s,"min_s":%s,"max_s":%s,"signatures_median":%s,' \
        "$(cut -d' ' -f1 "$file" | median)" "$(cut -d' ' -f1 "$file" | sort -g | head -n1)" \
        "$(cut -d' ' -f1 "$file" | sort -g | tail -n1)" "$(cut -d' ' -f2 "$file" | median)"
    printf '"wall_s":[%s],"signatures":[%s],"ok":1,"rc":0}\n' "$walls" "$sigs"
}
row mtls-keystore "$WORK/ours.txt" "SoftHSM token, account key in the token" >>"$OUT"
if [ "$have_lego" = 1 ]; then
    row lego "$WORK/lego.txt" "keys on disk" >>"$OUT"
else
    printf '{"bench":"acme","impl":"lego","alg":"ec","threads":1,"failed":1,"rc":1,"error":"lego is not installed (Debian package lego)"}\n' >>"$OUT"
fi
cat "$WORK/ours.txt" "$WORK/lego.txt" >&2
