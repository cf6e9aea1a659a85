#!/usr/bin/env bash
# remote_token.sh: a token reached over p11-kit's remoting, and a server that
# keeps running while the token's server restarts.
#
# `p11-kit server --provider SoftHSM "pkcs11:token=remote"` exports the token
# on a Unix socket in the work directory; the CLI and the provider reach it
# with `pkcs11-module = p11-kit-client.so` and P11_KIT_SERVER_ADDRESS. Through
# it: enroll (key generation and the CSR's signature), and an `openssl
# s_server` serving mutual TLS with the key (a software client key from the
# test CA).
#
# Then the p11-kit server is stopped (it and the per-connection process it
# forked, by PID) while s_server keeps running: a handshake fails at once,
# not after a timeout, and s_server's error names the module and the CKR.
# The p11-kit server starts again on the same socket: the next handshakes
# work, in the same s_server process, which initialised the module again,
# opened a new session and logged in once more (the provider's call trace,
# MTLSKS_DEBUG=1).
. "$(dirname "$0")/../lib/common.sh"

require_cmd p11-kit
setup_test
CLIENT_MODULE=${MTLSKS_P11KIT_CLIENT:-$(pkg-config --variable=p11_module_path p11-kit-1 2>/dev/null || echo /usr/lib/x86_64-linux-gnu/pkcs11)/p11-kit-client.so}
[ -r "$CLIENT_MODULE" ] || skip "$CLIENT_MODULE not found (Debian package p11-kit-modules)"

new_token remote
SOCK=$WORK/p11-kit.sock
export P11_KIT_SERVER_ADDRESS=unix:path=$SOCK
REMOTE_CNF=$WORK/remote.cnf
sed "s|^pkcs11-module = .*|pkcs11-module = $CLIENT_MODULE|" "$TOKEN_CNF" >"$REMOTE_CNF"
grep -q "^pkcs11-module = $CLIENT_MODULE\$" "$REMOTE_CNF" || fail "no client module in $REMOTE_CNF"

# children_of PID: the processes whose parent is PID.
children_of() {
    local f stat
    for f in /proc/[0-9]*/stat; do
        stat=$(cat "$f" 2>/dev/null) || continue
        stat=${stat##*) }
        # shellcheck disable=SC2086 # split the fields
        set -- $stat
        [ "$2" != "$P11_SERVER" ] || echo "${f//[^0-9]/}"
    done
}

P11_SERVER=
start_p11kit_server() {
    rm -f "$SOCK"
    p11-kit server -f -n "$SOCK" --provider "$SOFTHSM_MODULE" "pkcs11:token=remote" \
        </dev/null >"$WORK/p11-kit-server.$1.log" 2>&1 &
    P11_SERVER=$!
    _SERVER_PIDS+=("$P11_SERVER")
    for _ in $(seq 100); do
        [ -S "$SOCK" ] && return 0
        kill -0 "$P11_SERVER" 2>/dev/null || break
        sleep 0.1
    done
    sed 's/^/    p11-kit| /' "$WORK/p11-kit-server.$1.log" >&2
    fail "p11-kit server did not start"
}
# Stops the p11-kit server and the process it forked for each client (a
# restarted server has none of them), by PID.
stop_p11kit_server() {
    local pid
    for pid in $(children_of) "$P11_SERVER"; do
        stop_pid "$pid"
    done
}

start_p11kit_server 1
note "p11-kit server $P11_SERVER on $SOCK"
run_ok list env OPENSSL_CONF="$REMOTE_CNF" "$MTLSKS_CLI" list
assert_grep "$WORK/list.out" 'remote' "the remote token is listed through p11-kit-client.so"

# Enrolled through the remote token: the key is made there, the CSR signed there.
TOKEN_CNF=$REMOTE_CNF enroll srv ec:P-256 server
ca_sign "$WORK/srv.csr" "$WORK/srv.pem"
software_client cli ca

start_server "$WORK/s_server.log" env OPENSSL_CONF="$REMOTE_CNF" MTLSKS_DEBUG=1 \
    openssl s_server -accept 127.0.0.1:0 -www -Verify 1 -verify_return_error \
    -cert "$WORK/srv.pem" -key "$WORK/srv.key.pem" -CAfile "$MTLSKS_FIXTURE/ca.pem"
S_SERVER=$SERVER_PID

# handshake STEP: one mutual-TLS exchange with s_server, under a 30 s limit;
# sets HS_RC (0: it worked) and HS_SECS.
handshake() {
    local t0
    t0=$(date +%s.%N)
    HS_RC=0
    printf 'GET / HTTP/1.0\r\n\r\n' | timeout 30 env OPENSSL_CONF="$MTLSKS_FIXTURE/plain.cnf" \
        openssl s_client -connect "127.0.0.1:$SERVER_PORT" -tls1_3 -cert "$WORK/cli.pem" \
        -key "$WORK/cli.soft.key" -CAfile "$MTLSKS_FIXTURE/ca.pem" -verify_return_error \
        -ign_eof >"$WORK/$1.log" 2>&1 || HS_RC=$?
    HS_SECS=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
    [ "$HS_RC" -ne 0 ] || grep -q '^Client certificate$' "$WORK/$1.log" || HS_RC=99
}
handshake_ok() {
    handshake "$1"
    if [ "$HS_RC" -ne 0 ]; then
        sed 's/^/    client| /' "$WORK/$1.log" >&2
        sed 's/^/    server| /' "$WORK/s_server.log" >&2
        fail "$1: the handshake failed (exit $HS_RC)"
    fi
}
calls() { grep -c "^mtlsks: $1 -> CKR_OK\$" "$WORK/s_server.log" || true; }

handshake_ok before-1
handshake_ok before-2
LOGINS=$(calls C_Login)
INITS=$(calls C_Initialize)
note "two handshakes through the remote token (C_Login x$LOGINS so far)"

# --- the token's server goes away ---
stop_p11kit_server
handshake down-1
[ "$HS_RC" -ne 0 ] || fail "a handshake worked while the p11-kit server was down"
[ "$HS_RC" -ne 124 ] || fail "the handshake hung while the p11-kit server was down (30 s)"
handshake down-2
[ "$HS_RC" -ne 0 ] && [ "$HS_RC" -ne 124 ] || fail "second handshake while down: exit $HS_RC"
kill -0 "$S_SERVER" 2>/dev/null || fail "s_server exited when the token's server went away"
assert_grep "$WORK/s_server.log" "PKCS#11 module '$CLIENT_MODULE' lost its connection.*: C_[A-Za-z]+ failed: CKR_[A-Z_]+" \
    "s_server's error names the module and the CKR"
note "while down: handshakes fail at once (${HS_SECS} s): $(grep -m1 -o "PKCS#11 module.*" "$WORK/s_server.log")"

# --- back, on the same socket; s_server was never restarted ---
start_p11kit_server 2
handshake_ok after-1
handshake_ok after-2
kill -0 "$S_SERVER" 2>/dev/null || fail "s_server is not the process it was"
assert_eq "$(($(calls C_Login) - LOGINS))" 1 "C_Login after the token's server came back"
[ "$(calls C_Initialize)" -gt "$INITS" ] || fail "the module was not initialised again"
note "token server back: s_server $S_SERVER recovered (C_Initialize x$(($(calls C_Initialize) - INITS)) more, C_Login x1 more)"
note "remote token: enroll, mTLS, restart recovered without restarting s_server"
