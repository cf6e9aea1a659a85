#!/usr/bin/env bash
# Token faults under a running TLS server. `openssl s_server` holds its key
# in a SoftHSM token reached through the fault-injecting PKCS#11 shim
# (tests/p11shim); while it serves, the shim's control file switches faults
# on and off, and an `openssl s_client` connects after each switch:
#   - lost session / session closed / login lost during C_Sign: the
#     handshake still succeeds (the provider reopens, logs in again);
#   - device error, token removed, token not present: that handshake fails,
#     the server logs the PKCS#11 call and CKR, and keeps serving; once the
#     token is back the next handshake succeeds;
#   - a slow token (C_Sign delayed 2 s): the handshake succeeds, later.
# The server never crashes or hangs (every client and the server run under
# timeouts) and exits 0 at the end. The shim's call counts (written at exit)
# show one C_Login per lost login and no session leak: the sessions opened
# minus those closed stay within the sessions the token itself dropped,
# plus the pool, whatever the number of handshakes.
. "$(dirname "$0")/../lib/common.sh"

setup_test
[ -n "${MTLSKS_SHIM:-}" ] && [ -r "$MTLSKS_SHIM" ] || fail "fault-injecting shim not built (MTLSKS_SHIM=${MTLSKS_SHIM:-})"

# A PIN no output could contain by chance (the checks grep for it).
TEST_PIN=Fq4-faults-PIN-9173
new_token faults
enroll srv ec:P-256 server
ca_sign "$WORK/srv.csr" "$WORK/srv.pem"
software_client cli ca

SHIM_CNF=$WORK/openssl-shim.cnf
sed "s|^pkcs11-module = .*|pkcs11-module = $MTLSKS_SHIM|" "$TOKEN_CNF" >"$SHIM_CNF"
CTL=$WORK/faults.ctl
COUNTS=$WORK/shim.counts
unset MTLSKS_SHIM_FAULTS

# set_faults RULES: the shim's control file, replaced in one rename.
set_faults() {
    printf '%s\n' "$1" >"$CTL.new"
    mv -f "$CTL.new" "$CTL"
}

# The steps: "RULES|EXPECT" with EXPECT ok, or the CKR the server must log.
STEPS=(
    "|ok"
    "C_Sign=CKR_DEVICE_ERROR@1|CKR_DEVICE_ERROR"
    "|ok"
    "C_Sign=CKR_SESSION_HANDLE_INVALID@1|ok"
    "C_Sign=CKR_SESSION_CLOSED@1|ok"
    "C_SignInit=CKR_SESSION_HANDLE_INVALID@1|ok"
    "C_Sign=CKR_USER_NOT_LOGGED_IN@1|ok"
    "*=CKR_DEVICE_REMOVED|CKR_DEVICE_REMOVED"
    "*=CKR_DEVICE_REMOVED|CKR_DEVICE_REMOVED"
    "|ok"
    "*=CKR_TOKEN_NOT_PRESENT|CKR_TOKEN_NOT_PRESENT"
    "|ok"
    "C_Sign=CKR_GENERAL_ERROR@1|CKR_GENERAL_ERROR"
    "C_Sign=delay:2s|ok"
    "|ok"
)
EXTRA_OK=10 # clean handshakes at the end: the session count must not grow
NACCEPT=$((${#STEPS[@]} + EXTRA_OK))
# Logins the server needs: its first, one after the lost login, one after
# each of the two removals.
WANT_LOGINS=4
# Sessions the token declared invalid (the provider gives them up, rightly
# without C_CloseSession), the pool of a one-thread server, and the opens the
# shim refused while the token was gone (counted as calls, opened nothing).
DROPPED=3
REFUSED_OPENS=3

SLOG=$WORK/server.log
start_server "$SLOG" env OPENSSL_CONF="$SHIM_CNF" MTLSKS_SHIM_MODULE="$SOFTHSM_MODULE" \
    MTLSKS_SHIM_CONTROL="$CTL" MTLSKS_SHIM_COUNTS="$COUNTS" openssl s_server \
    -accept 127.0.0.1:0 -naccept "$NACCEPT" -www -Verify 1 -verify_return_error \
    -cert "$WORK/srv.pem" -key "$WORK/srv.key.pem" -CAfile "$MTLSKS_FIXTURE/ca.pem"
SPID=$SERVER_PID

# connect STEP: one client; sets CLIENT_RC and SECS (duration).
connect() {
    local step=$1 t0
    t0=$(date +%s%N)
    CLIENT_RC=0
    printf 'GET / HTTP/1.0\r\n\r\n' | timeout 30 env OPENSSL_CONF="$MTLSKS_FIXTURE/plain.cnf" \
        openssl s_client -connect "127.0.0.1:$SERVER_PORT" -tls1_3 -cert "$WORK/cli.pem" \
        -key "$WORK/cli.soft.key" -CAfile "$MTLSKS_FIXTURE/ca.pem" -verify_return_error \
        -ign_eof >"$WORK/$step.client.log" 2>&1 || CLIENT_RC=$?
    SECS=$((($(date +%s%N) - t0) / 1000000))
}

n=0
for entry in "${STEPS[@]}"; do
    rules=${entry%|*} want=${entry##*|}
    n=$((n + 1))
    step=$(printf 'step%02d' "$n")
    set_faults "$rules"
    before=$(wc -c <"$SLOG")
    connect "$step"
    tail -c +$((before + 1)) "$SLOG" >"$WORK/$step.server.log"
    kill -0 "$SPID" 2>/dev/null || {
        sed 's/^/    server| /' "$SLOG" >&2
        fail "$step [$rules]: s_server died (crash?)"
    }
    [ "$CLIENT_RC" -ne 124 ] || fail "$step [$rules]: the handshake hung (client killed after 30 s)"
    if [ "$want" = ok ]; then
        if [ "$CLIENT_RC" -ne 0 ] || ! grep -q 'HTTP/1.0 200' "$WORK/$step.client.log" ||
            ! grep -q '^Client certificate$' "$WORK/$step.client.log"; then
            sed 's/^/    client| /' "$WORK/$step.client.log" >&2
            sed 's/^/    server| /' "$WORK/$step.server.log" >&2
            fail "$step [${rules:-no faults}]: the handshake failed (client exit $CLIENT_RC); the server should have recovered"
        fi
        note "$step [${rules:-no faults}]: handshake ok (${SECS} ms)"
    else
        if [ "$CLIENT_RC" -eq 0 ] || [ "$CLIENT_RC" -gt 125 ]; then
            sed 's/^/    client| /' "$WORK/$step.client.log" >&2
            fail "$step [$rules]: client exit $CLIENT_RC, expected a clean failure"
        fi
        assert_grep "$WORK/$step.server.log" "C_[A-Za-z]+ failed: $want \(token 'faults'\)" \
            "$step [$rules]: the server's error does not name the call and $want"
        note "$step [$rules]: refused cleanly: $(grep -Eo "C_[A-Za-z]+ failed: $want \(token 'faults'\)" "$WORK/$step.server.log" | head -n1)"
    fi
    case $rules in
    *delay:2s*) [ "$SECS" -ge 2000 ] || fail "$step: the 2 s delay did not apply (${SECS} ms)" ;;
    esac
done
set_faults ""
for i in $(seq "$EXTRA_OK"); do
    connect "extra$i"
    [ "$CLIENT_RC" -eq 0 ] || {
        sed 's/^/    client| /' "$WORK/extra$i.client.log" >&2
        fail "extra handshake $i failed (client exit $CLIENT_RC)"
    }
done
note "$EXTRA_OK more handshakes without faults: ok"

wait_pid "$SPID" 30 || fail "s_server still running after its $NACCEPT connections"
[ "$WAIT_RC" -eq 0 ] || {
    sed 's/^/    server| /' "$SLOG" >&2
    fail "s_server exit $WAIT_RC (must be 0; >128 is a crash)"
}
assert_file "$COUNTS" "the shim's call counts"
count() { awk -v fn="$1" '$2 == fn { c = $3 } END { print c + 0 }' "$COUNTS"; }
logins=$(count C_Login)
opens=$(count C_OpenSession)
closes=$(count C_CloseSession)
note "shim counts: $(tr '\n' ' ' <"$COUNTS" | sed 's/  */ /g')"
assert_eq "$logins" "$WANT_LOGINS" "C_Login calls over $NACCEPT connections (one per lost login)"
left=$((opens - closes))
bound=$((DROPPED + REFUSED_OPENS + 1))
[ "$left" -ge 0 ] && [ "$left" -le "$bound" ] ||
    fail "sessions: $opens C_OpenSession - $closes C_CloseSession = $left left open, more than $bound (a leak)"
assert_no_grep "$SLOG" "$TEST_PIN" "the server's log shows the PIN"
note "token faults under s_server: $n steps and $EXTRA_OK more handshakes, $logins logins, $left sessions not closed (bound $bound): ok"
