# shellcheck shell=bash
#
# Shared helpers for the integration tests (tests/integration/*.sh).
#
# Source it first thing:  . "$(dirname "$0")/../lib/common.sh"
#
# Every test gets its own work directory ($WORK) and, through new_token, its
# own SoftHSM token directory, pin file and openssl.cnf, so that tests run in
# parallel (ctest -j) without seeing each other's keys. The CTest fixture
# (softhsm_setup.sh) builds what tests share read-only: the test CAs.
#
# Environment, set by CTest (tests/integration/CMakeLists.txt):
#   MTLSKS_BUILD     build directory          MTLSKS_SRC     source directory
#   MTLSKS_PROVIDER  path of mtlsks.so        MTLSKS_CLI     path of mtls-keystore
#   MTLSKS_FIXTURE   fixture directory (test CAs, fixture.env)
#   MTLSKS_TMP       where work directories go (default: $TMPDIR or /tmp)
# Optional:
#   MTLSKS_SOFTHSM_MODULE  SoftHSM module (default /usr/lib/softhsm/libsofthsm2.so)
#   MTLSKS_KEEP_TMP=1      keep $WORK after the test, for debugging
#   MTLSKS_VALGRIND=1      run the programs a test starts through "${VALGRIND[@]}"
#                          (the s_server/s_client of tls_handshake, reject_matrix.sh)
#                          under valgrind memcheck; a memory error or a definite
#                          leak fails the test (ci/test's valgrind stage)
#
# Conventions: skip "reason" exits 77 (CTest SKIP_RETURN_CODE); fail "reason"
# exits 1. run_ok / run_rc keep each command's output in $WORK/STEP.out and
# $WORK/STEP.err and print it when the command does not do what was expected.

set -euo pipefail

TEST_NAME=${TEST_NAME:-$(basename "$0" .sh)}
SOFTHSM_MODULE=${MTLSKS_SOFTHSM_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
# Test PINs. They only ever reach mtls-keystore and the provider through a
# 0600 pin file; the fixture tools (softhsm2-util, pkcs11-tool) take them on
# their command line because they offer nothing else.
TEST_PIN=1234
TEST_SO_PIN=5678

# Nothing from the caller's environment may pick the token or the config.
unset OPENSSL_CONF OPENSSL_MODULES OPENSSL_ENGINES SOFTHSM2_CONF PKCS11_MODULE_PATH
# No test reads a terminal: a PIN prompt must fail, not wait for a human
# running ctest.
exec </dev/null

_SERVER_PIDS=()
WORK=
# Prefix for commands to run under valgrind when MTLSKS_VALGRIND=1 (set by
# new_workdir; empty otherwise): "${VALGRIND[@]}" openssl s_server ...
VALGRIND=()

note() { printf -- '-- %s\n' "$*"; }
skip() {
    printf 'SKIP: %s\n' "$*"
    exit 77
}
fail() {
    printf 'FAIL: %s\n' "$*" >&2
    exit 1
}

_quote() {
    local out='' a
    for a in "$@"; do
        out+="$(printf '%q' "$a") "
    done
    printf '%s' "${out% }"
}

require_cmd() {
    local c
    for c in "$@"; do
        command -v "$c" >/dev/null 2>&1 || skip "$c is not installed"
    done
}

# The build products must exist: a test that finds them missing fails, it does
# not skip (a missing CLI is a broken build, not a missing tool).
require_built() {
    [ -n "${MTLSKS_CLI:-}" ] || fail "MTLSKS_CLI is not set (run through ctest)"
    [ -n "${MTLSKS_PROVIDER:-}" ] || fail "MTLSKS_PROVIDER is not set (run through ctest)"
    [ -x "$MTLSKS_CLI" ] || fail "CLI not built: $MTLSKS_CLI"
    [ -r "$MTLSKS_PROVIDER" ] || fail "provider not built: $MTLSKS_PROVIDER"
}

require_softhsm() {
    require_cmd softhsm2-util openssl
    [ -r "$SOFTHSM_MODULE" ] || skip "SoftHSM module $SOFTHSM_MODULE not found (Debian package softhsm2)"
}

require_fixture() {
    if [ -z "${MTLSKS_FIXTURE:-}" ] || [ ! -r "$MTLSKS_FIXTURE/fixture.env" ]; then
        fail "fixture missing: ${MTLSKS_FIXTURE:-<unset>}/fixture.env (run through ctest, which runs fixture.softhsm.setup first)"
    fi
    # shellcheck source=/dev/null
    . "$MTLSKS_FIXTURE/fixture.env"
}

# Everything a test on a SoftHSM token needs.
setup_test() {
    require_built
    require_softhsm
    require_fixture
    new_workdir
}

# ---------------------------------------------------------------------------
# Work directory, cleanup, servers

new_workdir() {
    local base=${MTLSKS_TMP:-${TMPDIR:-/tmp}}
    mkdir -p "$base"
    WORK=$(mktemp -d "$base/$TEST_NAME.XXXXXX")
    trap _cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    note "work directory $WORK"
    if [ "${MTLSKS_VALGRIND:-0}" = 1 ]; then
        require_cmd valgrind
        # Exit 99 on any memory error or definite leak; one log per process.
        VALGRIND=(valgrind --error-exitcode=99 --leak-check=full
            --errors-for-leak-kinds=definite --show-leak-kinds=definite --num-callers=40
            "--suppressions=$MTLSKS_SRC/tests/lib/valgrind.supp"
            "--log-file=$WORK/valgrind.%p.log")
    fi
}

# With MTLSKS_VALGRIND=1: 0 when no valgrind log reports an error or a
# definite leak, else prints the logs and returns 1. Also catches programs
# whose failure the test expected (refusals), whose exit code says nothing.
valgrind_clean() {
    local log bad=0
    [ "${#VALGRIND[@]}" -gt 0 ] || return 0
    for log in "$WORK"/valgrind.*.log; do
        [ -e "$log" ] || continue
        if grep -Eq 'ERROR SUMMARY: [1-9]|definitely lost: [1-9]|Invalid (read|write|free)|uninitialised' "$log"; then
            echo "    valgrind: $(basename "$log"):" >&2
            sed 's/^/    | /' "$log" >&2
            bad=1
        fi
    done
    return "$bad"
}

_cleanup() {
    local rc=$? pid vg_bad=0
    for pid in "${_SERVER_PIDS[@]}"; do
        stop_pid "$pid"
    done
    if [ -n "$WORK" ] && [ -d "$WORK" ] && ! valgrind_clean; then
        printf 'FAIL: %s\n' "valgrind reported memory errors or definite leaks" >&2
        vg_bad=1
    fi
    if [ -n "$WORK" ] && [ -d "$WORK" ]; then
        if [ "${MTLSKS_KEEP_TMP:-0}" = 1 ]; then
            note "kept $WORK"
        else
            rm -rf -- "$WORK"
        fi
    fi
    # Only a valgrind finding changes how the test ends (exit in an EXIT
    # trap sets the status; return would not).
    [ "$vg_bad" = 0 ] || exit 1
    return "$rc"
}

# stop_pid PID: stops a process this test started (TERM, then KILL after 5 s).
stop_pid() {
    local pid=$1
    kill -0 "$pid" 2>/dev/null || return 0
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# wait_pid PID SECONDS: waits for a child to exit; sets WAIT_RC to its exit
# code. Returns 1 (child still running) after SECONDS.
wait_pid() {
    local pid=$1 secs=$2
    for _ in $(seq $((secs * 10))); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        return 1
    fi
    WAIT_RC=0
    wait "$pid" || WAIT_RC=$?
    return 0
}

# start_server LOG CMD...: starts an `openssl s_server -accept 127.0.0.1:0 ...`
# command in the background (under a 120 s timeout, so that it never outlives
# the test), waits until it listens and sets SERVER_PID and SERVER_PORT.
# Port 0 makes the kernel choose a free port; s_server prints it as
# "ACCEPT 127.0.0.1:PORT" once it listens, so there is no race for a port
# and no guessing when it is ready.
start_server() {
    local log=$1
    shift
    # The log exists before the server starts: the loop below reads it at
    # once, before the background shell may have opened it.
    : >"$log"
    timeout 120 "$@" </dev/null >"$log" 2>&1 &
    SERVER_PID=$!
    _SERVER_PIDS+=("$SERVER_PID")
    SERVER_PORT=
    for _ in $(seq 200); do
        SERVER_PORT=$(sed -n 's/^ACCEPT .*:\([0-9][0-9]*\)$/\1/p' "$log" | head -n1)
        [ -n "$SERVER_PORT" ] && break
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            sed 's/^/    server| /' "$log" >&2
            fail "server exited before listening: $(_quote "$@")"
        fi
        sleep 0.1
    done
    if [ -z "$SERVER_PORT" ]; then
        sed 's/^/    server| /' "$log" >&2
        fail "server not listening after 20 s: $(_quote "$@")"
    fi
}

# ---------------------------------------------------------------------------
# Running commands and checking what they did

_show_output() {
    local step=$1
    if [ -s "$WORK/$step.out" ]; then
        echo "    stdout:" >&2
        sed 's/^/    | /' "$WORK/$step.out" >&2
    fi
    if [ -s "$WORK/$step.err" ]; then
        echo "    stderr:" >&2
        sed 's/^/    | /' "$WORK/$step.err" >&2
    fi
}

# run_ok STEP CMD...: CMD must exit 0.
run_ok() {
    local step=$1 rc=0
    shift
    "$@" >"$WORK/$step.out" 2>"$WORK/$step.err" || rc=$?
    if [ "$rc" -ne 0 ]; then
        _show_output "$step"
        fail "$step: exit $rc, expected 0: $(_quote "$@")"
    fi
}

# run_rc STEP EXPECTED CMD...: CMD must exit with EXPECTED.
run_rc() {
    local step=$1 want=$2 rc=0
    shift 2
    "$@" >"$WORK/$step.out" 2>"$WORK/$step.err" || rc=$?
    if [ "$rc" -ne "$want" ]; then
        _show_output "$step"
        fail "$step: exit $rc, expected $want: $(_quote "$@")"
    fi
}

# run_fails STEP CMD...: CMD must exit non-zero, and not by a signal (a crash
# is never an acceptable way to fail).
run_fails() {
    local step=$1 rc=0
    shift
    "$@" >"$WORK/$step.out" 2>"$WORK/$step.err" || rc=$?
    if [ "$rc" -eq 0 ] || [ "$rc" -gt 125 ]; then
        _show_output "$step"
        fail "$step: exit $rc, expected a clean failure (1..125): $(_quote "$@")"
    fi
}

# assert_grep FILE REGEX WHAT: FILE contains a line matching the (extended,
# case-insensitive) REGEX.
assert_grep() {
    local file=$1 re=$2 what=$3
    if ! grep -Eiq -- "$re" "$file"; then
        echo "    $file:" >&2
        sed 's/^/    | /' "$file" >&2
        fail "$what (no line matching /$re/ in $(basename "$file"))"
    fi
}

assert_no_grep() {
    local file=$1 re=$2 what=$3
    if grep -Eiq -- "$re" "$file"; then
        echo "    $file:" >&2
        grep -Ein -- "$re" "$file" | sed 's/^/    | /' >&2
        fail "$what (unexpected line matching /$re/ in $(basename "$file"))"
    fi
}

assert_eq() {
    local got=$1 want=$2 what=$3
    [ "$got" = "$want" ] || fail "$what: got '$got', expected '$want'"
}

assert_file() {
    [ -s "$1" ] || fail "$2: $1 missing or empty"
}

assert_no_file() {
    [ ! -e "$1" ] || fail "$2: $1 exists"
}

assert_same_file() {
    local a=$1 b=$2 what=$3
    if ! cmp -s "$a" "$b"; then
        diff -u "$a" "$b" | sed 's/^/    /' >&2 || true
        fail "$what: $(basename "$a") and $(basename "$b") differ"
    fi
}

file_mode() { stat -c '%a' "$1"; }

# ---------------------------------------------------------------------------
# SoftHSM tokens

_write_softhsm_conf() {
    cat >"$1" <<EOF
directories.tokendir = $2
objectstore.backend = file
log.level = ERROR
slots.removable = false
EOF
}

# write_openssl_cnf FILE [PIN_SOURCE]: an openssl.cnf that loads the default
# provider and ours, with the token module and (when given) the PIN source.
write_openssl_cnf() {
    local file=$1 pin_source=${2:-}
    {
        echo "openssl_conf = openssl_init"
        echo
        echo "[openssl_init]"
        echo "providers = provider_sect"
        echo
        echo "[provider_sect]"
        echo "default = default_sect"
        echo "mtlsks = mtlsks_sect"
        echo
        echo "[default_sect]"
        echo "activate = 1"
        echo
        echo "[mtlsks_sect]"
        echo "module = $MTLSKS_PROVIDER"
        echo "pkcs11-module = $SOFTHSM_MODULE"
        [ -z "$pin_source" ] || echo "pkcs11-pin-source = $pin_source"
        echo "activate = 1"
        echo
        echo "# for \`openssl req\` run with this file as its configuration"
        echo "[req]"
        echo "distinguished_name = req_dn"
        echo "[req_dn]"
    } >"$file"
}

# use_tokendir DIR: SoftHSM with the token directory DIR (tokens in it are
# kept). Sets and exports SOFTHSM2_CONF; sets PIN_FILE (0600, $TEST_PIN
# without a newline), TOKEN_CNF (openssl.cnf naming the module and the pin
# file) and TOKEN_CNF_NOPIN (the same without a PIN source).
use_tokendir() {
    mkdir -p "$1"
    SOFTHSM2_CONF=$WORK/softhsm2.conf
    export SOFTHSM2_CONF
    _write_softhsm_conf "$SOFTHSM2_CONF" "$1"
    PIN_FILE=$WORK/pin
    (
        umask 077
        printf '%s' "$TEST_PIN" >"$PIN_FILE"
    )
    TOKEN_CNF=$WORK/openssl.cnf
    write_openssl_cnf "$TOKEN_CNF" "file:$PIN_FILE"
    TOKEN_CNF_NOPIN=$WORK/openssl-nopin.cnf
    write_openssl_cnf "$TOKEN_CNF_NOPIN"
}

# new_token LABEL [LABEL...]: a private SoftHSM token directory in $WORK with
# one initialised token per LABEL (user PIN $TEST_PIN, SO PIN $TEST_SO_PIN);
# see use_tokendir. TOKEN_LABEL is the first label.
new_token() {
    local label
    TOKEN_LABEL=$1
    use_tokendir "$WORK/tokens"
    for label in "$@"; do
        add_token "$label"
    done
}

add_token() {
    run_ok "init-token-$1" softhsm2-util --init-token --free --label "$1" \
        --pin "$TEST_PIN" --so-pin "$TEST_SO_PIN"
}

# p11tool_ CMD...: pkcs11-tool on the SoftHSM module (a fixture tool; takes the
# PIN on its command line, see TEST_PIN).
p11tool_() {
    pkcs11-tool --module "$SOFTHSM_MODULE" "$@"
}

# count_objects TOKEN: number of objects (keys, certificates, data) on a token,
# as pkcs11-tool sees them after login.
count_objects() {
    p11tool_ --token-label "$1" --login --pin "$TEST_PIN" --list-objects 2>/dev/null |
        grep -Ec '^(Private Key|Public Key|Secret Key|Certificate|Data) Object' || true
}

# ---------------------------------------------------------------------------
# The code under test

# mks ARGS...: the CLI as a user runs it after `export OPENSSL_CONF=...`.
mks() {
    OPENSSL_CONF=$TOKEN_CNF "$MTLSKS_CLI" "$@"
}

# ossl ARGS...: openssl with our provider loaded from openssl.cnf.
ossl() {
    OPENSSL_CONF=$TOKEN_CNF openssl "$@"
}

# plain_ossl ARGS...: openssl with the default provider only (the CA, checks).
plain_ossl() {
    OPENSSL_CONF=$MTLSKS_FIXTURE/plain.cnf openssl "$@"
}

key_uri() { printf 'pkcs11:token=%s;object=%s;type=private' "${2:-$TOKEN_LABEL}" "$1"; }
cert_uri() { printf 'pkcs11:token=%s;object=%s;type=cert' "${2:-$TOKEN_LABEL}" "$1"; }

# enroll NAME KEY_TYPE USAGE [extra enroll args...]: makes key NAME in
# $TOKEN_LABEL with the CLI; writes $WORK/NAME.csr and $WORK/NAME.key.pem
# (the key reference) and sets ENROLL_URI to the URI the CLI printed.
enroll() {
    local name=$1 type=$2 usage=$3
    shift 3
    run_ok "enroll-$name" mks enroll --token "$TOKEN_LABEL" --label "$name" \
        --key-type "$type" --usage "$usage" --subject "CN=$name,O=mtls-keystore tests" \
        --san "DNS:$name.test" --san "DNS:localhost" --san "IP:127.0.0.1" "$@" \
        --out "$WORK/$name.csr" --key-ref "$WORK/$name.key.pem"
    ENROLL_URI=$(grep -Eo 'pkcs11:[^[:space:]"]+' "$WORK/enroll-$name.out" | head -n1 || true)
    [ -n "$ENROLL_URI" ] || {
        _show_output "enroll-$name"
        fail "enroll $name: no pkcs11: URI printed on stdout"
    }
}

# ca_sign CSR OUT [CA_NAME]: the fixture's test CA (or CA_NAME: "rogue")
# issues a certificate for CSR, copying the extensions it requests.
ca_sign() {
    local csr=$1 out=$2 ca=${3:-ca} serial
    serial=$(od -An -tx1 -N8 /dev/urandom | tr -d ' \n')
    run_ok "ca-sign-$(basename "$out")" plain_ossl x509 -req -in "$csr" \
        -CA "$MTLSKS_FIXTURE/$ca.pem" -CAkey "$MTLSKS_FIXTURE/$ca.key" \
        -set_serial "0x7$serial" -days 2 -copy_extensions copyall \
        -extfile "$MTLSKS_FIXTURE/leaf.ext" -extensions leaf -out "$out"
}

# software_client NAME CA_NAME: a software key and certificate for a client,
# issued by CA_NAME ("ca" or "rogue"): $WORK/NAME.soft.key, $WORK/NAME.pem.
software_client() {
    local name=$1 ca=$2
    run_ok "soft-$name" plain_ossl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
        -nodes -keyout "$WORK/$name.soft.key" -subj "/CN=$name" \
        -addext "extendedKeyUsage=clientAuth" -out "$WORK/$name.soft.csr"
    ca_sign "$WORK/$name.soft.csr" "$WORK/$name.pem" "$ca"
}

# spki_of_csr CSR OUT: the CSR's public key, PEM.
spki_of_csr() { run_ok "spki-$(basename "$2")" plain_ossl req -in "$1" -noout -pubkey -out "$2"; }

# p11_object_block FILE CLASS LABEL: from `pkcs11-tool --list-objects` output
# in FILE, the lines of the object of CLASS ("Private Key Object", "Public Key
# Object", "Certificate Object") labelled LABEL.
p11_object_block() {
    awk -v cls="$2" -v label="$3" '
        /^[A-Za-z].* Object/ { if (inb && found) exit; inb = index($0, cls) == 1; found = 0; buf = "" }
        inb { buf = buf $0 "\n"; if ($0 ~ "^ *label: *" label "$") found = 1 }
        END { if (inb && found) printf "%s", buf }
    ' "$1"
}

# hex2bin HEX: the bytes, on stdout.
hex2bin() { printf '%b' "$(printf '%s' "$1" | sed 's/../\\x&/g')"; }

# spki_from_token LABEL OUT: the SubjectPublicKeyInfo of the public key object
# LABEL, PEM, built from what pkcs11-tool reads from the token (independent of
# our code). EC: from CKA_EC_PARAMS and CKA_EC_POINT (pkcs11-tool 0.23's
# --read-object cannot convert P-384 keys); RSA: pkcs11-tool --read-object.
spki_from_token() {
    local label=$1 out=$2 blk point params curve pthex
    run_ok "pubobjs-$label" p11tool_ --token-label "$TOKEN_LABEL" --list-objects --type pubkey
    blk=$WORK/$label.pubobj.txt
    p11_object_block "$WORK/pubobjs-$label.out" "Public Key Object" "$label" >"$blk"
    [ -s "$blk" ] || {
        sed 's/^/    | /' "$WORK/pubobjs-$label.out" >&2
        fail "no public key object labelled $label on token $TOKEN_LABEL"
    }
    if grep -q '^ *EC_POINT:' "$blk"; then
        point=$(sed -n 's/^ *EC_POINT: *\([0-9a-fA-F]*\)$/\1/p' "$blk" | head -n1)
        params=$(sed -n 's/^ *EC_PARAMS: *\([0-9a-fA-F]*\)$/\1/p' "$blk" | head -n1)
        if [ -z "$point" ] || [ -z "$params" ]; then
            fail "$label: EC public key without EC_POINT/EC_PARAMS"
        fi
        hex2bin "$params" >"$WORK/$label.ecparams.der"
        hex2bin "$point" >"$WORK/$label.ecpoint.der"
        run_ok "ecparams-$label" plain_ossl asn1parse -inform DER -in "$WORK/$label.ecparams.der"
        curve=$(sed -n 's/.*prim: OBJECT *://p' "$WORK/ecparams-$label.out")
        [ -n "$curve" ] || fail "$label: CKA_EC_PARAMS is not a named curve: $params"
        run_ok "ecpoint-$label" plain_ossl asn1parse -inform DER -in "$WORK/$label.ecpoint.der"
        pthex=$(sed -n 's/.*prim: OCTET STRING *\[HEX DUMP\]://p' "$WORK/ecpoint-$label.out")
        [ -n "$pthex" ] || fail "$label: CKA_EC_POINT is not a DER OCTET STRING: $point"
        printf '%s\n' "asn1 = SEQUENCE:spki" "[spki]" "alg = SEQUENCE:alg" \
            "key = FORMAT:HEX,BITSTRING:$pthex" "[alg]" "oid = OID:id-ecPublicKey" \
            "curve = OID:$curve" >"$WORK/$label.spki.cnf"
        run_ok "spki-gen-$label" plain_ossl asn1parse -genconf "$WORK/$label.spki.cnf" \
            -out "$WORK/$label.pub.der" -noout
    else
        run_ok "read-pub-$label" p11tool_ --token-label "$TOKEN_LABEL" --read-object --type pubkey \
            --label "$label" -o "$WORK/$label.pub.der"
    fi
    run_ok "pub-pem-$label" plain_ossl pkey -pubin -inform DER -in "$WORK/$label.pub.der" \
        -pubout -out "$out"
}

# tls_handshake STEP TLSVER SRV_CERT SRV_KEY CLI_CERT CLI_KEY [server args...]:
# one mutual-TLS exchange between `openssl s_server -Verify 1
# -verify_return_error -www` and `openssl s_client`, both with our provider
# loaded (keys given as pkcs11: URIs or key-reference files). TLSVER is 1_3 or
# 1_2. Checks that both exit 0 (no crash at exit), that the protocol is the
# one asked for, that the client verified the server and that the server saw
# the client's certificate (the -www page echoes it). Extra s_client
# arguments: the array TLS_CLIENT_ARGS; both sides trust TLS_CAFILE (default:
# the fixture's test CA).
TLS_CLIENT_ARGS=()
tls_handshake() {
    local step=$1 ver=$2 scert=$3 skey=$4 ccert=$5 ckey=$6
    shift 6
    start_server "$WORK/$step.server.log" env OPENSSL_CONF="$TOKEN_CNF" "${VALGRIND[@]}" \
        openssl s_server -accept 127.0.0.1:0 -naccept 1 -www -Verify 1 -verify_return_error \
        -cert "$scert" -key "$skey" -CAfile "${TLS_CAFILE:-$MTLSKS_FIXTURE/ca.pem}" "$@"
    local spid=$SERVER_PID rc=0 src
    printf 'GET / HTTP/1.0\r\n\r\n' | timeout 60 env OPENSSL_CONF="$TOKEN_CNF" "${VALGRIND[@]}" openssl s_client \
        -connect "127.0.0.1:$SERVER_PORT" "-tls$ver" -cert "$ccert" -key "$ckey" \
        -CAfile "${TLS_CAFILE:-$MTLSKS_FIXTURE/ca.pem}" -verify_return_error -ign_eof "${TLS_CLIENT_ARGS[@]}" \
        >"$WORK/$step.client.log" 2>&1 || rc=$?
    if ! wait_pid "$spid" 30; then
        sed 's/^/    server| /' "$WORK/$step.server.log" >&2
        fail "$step: server still running 30 s after the client finished"
    fi
    src=$WAIT_RC
    if [ "$rc" -ne 0 ] || [ "$src" -ne 0 ]; then
        sed 's/^/    client| /' "$WORK/$step.client.log" >&2
        sed 's/^/    server| /' "$WORK/$step.server.log" >&2
        fail "$step: s_client exit $rc, s_server exit $src (both must be 0; >128 is a crash)"
    fi
    local proto=TLSv1.3 cn
    [ "$ver" = 1_2 ] && proto=TLSv1.2
    cn=$(plain_ossl x509 -in "$ccert" -noout -subject -nameopt multiline |
        sed -n 's/^ *commonName *= *//p')
    assert_grep "$WORK/$step.client.log" "^New, $proto, Cipher is" "$step: not a $proto handshake"
    assert_grep "$WORK/$step.client.log" '^ *Verify return code: 0 \(ok\)' \
        "$step: the client did not verify the server"
    assert_grep "$WORK/$step.client.log" '^Client certificate$' \
        "$step: the server saw no client certificate"
    assert_grep "$WORK/$step.client.log" "Subject: .*CN ?= ?$cn" \
        "$step: the server saw another client certificate than $cn"
    assert_no_grep "$WORK/$step.server.log" 'error' "$step: the server logged an error"
    note "$step: $proto handshake ok"
}
