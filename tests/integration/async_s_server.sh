#!/usr/bin/env bash
# async_s_server.sh: `openssl s_server -async` (SSL_MODE_ASYNC; it waits for
# the wait fds with select() when a handshake says SSL_ERROR_WANT_ASYNC)
# serves mutual TLS with its key behind a slow token (the shim adds 200 ms to
# C_Sign): the handshake pauses while a keystore worker signs and completes
# with the signature. Then the provider's async-workers option: 0 signs in
# s_server's own thread (the handshake still works), and values that are
# not a number from 0 to 256 stop the provider from loading, with a line on
# stderr that names the option and the range (OpenSSL 3.0 itself drops the
# errors of a provider that fails to load from openssl.cnf).
. "$(dirname "$0")/../lib/common.sh"

setup_test
[ -r "${MTLSKS_SHIM:-}" ] || fail "MTLSKS_SHIM not built: ${MTLSKS_SHIM:-<unset>}"
new_token async
enroll srv ec:P-256 server
ca_sign "$WORK/srv.csr" "$WORK/srv.pem"
software_client cli ca

# shim_cnf FILE [async-workers]: the token's openssl.cnf with the shim as the module.
shim_cnf() {
    sed "s|^pkcs11-module = .*|pkcs11-module = $MTLSKS_SHIM|" "$TOKEN_CNF" >"$1"
    [ -z "${2:-}" ] || sed -i "s|^pkcs11-module = .*|&\nasync-workers = $2|" "$1"
}

# serve STEP CNF: one s_server -async, two handshakes with a software client.
serve() {
    local step=$1 cnf=$2 i
    start_server "$WORK/$step.server.log" env OPENSSL_CONF="$cnf" MTLSKS_SHIM_MODULE="$SOFTHSM_MODULE" \
        MTLSKS_SHIM_FAULTS='C_Sign=delay:200ms' MTLSKS_SHIM_COUNTS="$WORK/$step.counts" \
        "${VALGRIND[@]}" openssl s_server -async -accept 127.0.0.1:0 -naccept 2 -www -Verify 1 \
        -verify_return_error -cert "$WORK/srv.pem" -key "$WORK/srv.key.pem" \
        -CAfile "$MTLSKS_FIXTURE/ca.pem"
    local spid=$SERVER_PID
    for i in 1 2; do
        printf 'GET / HTTP/1.0\r\n\r\n' | timeout 60 env OPENSSL_CONF="$MTLSKS_FIXTURE/plain.cnf" \
            openssl s_client -connect "127.0.0.1:$SERVER_PORT" -tls1_3 -cert "$WORK/cli.pem" \
            -key "$WORK/cli.soft.key" -CAfile "$MTLSKS_FIXTURE/ca.pem" -verify_return_error \
            -ign_eof >"$WORK/$step.client$i.log" 2>&1 || {
            sed 's/^/    client| /' "$WORK/$step.client$i.log" >&2
            sed 's/^/    server| /' "$WORK/$step.server.log" >&2
            fail "$step: handshake $i failed"
        }
        assert_grep "$WORK/$step.client$i.log" '^Client certificate$' "$step: the server saw the client's certificate"
    done
    wait_pid "$spid" 60 || fail "$step: s_server still running after its two connections"
    [ "$WAIT_RC" -eq 0 ] || fail "$step: s_server exit $WAIT_RC (a crash at exit is >128)"
    assert_grep "$WORK/$step.counts" '^[0-9]+ C_Sign 2$' "$step: one C_Sign per handshake"
}

shim_cnf "$WORK/async.cnf"
serve async "$WORK/async.cnf"
note "s_server -async: 2 handshakes with a 200 ms token"

shim_cnf "$WORK/off.cnf" 0
serve off "$WORK/off.cnf"
note "async-workers = 0: 2 handshakes, signed in s_server's thread"

for bad in abc -1 257 12x; do
    shim_cnf "$WORK/bad.cnf" "$bad"
    run_fails "bad-$bad" env OPENSSL_CONF="$WORK/bad.cnf" openssl pkey -in "$WORK/srv.key.pem" -noout
    assert_grep "$WORK/bad-$bad.err" "^mtlsks: async-workers = '$bad' in the provider's section of openssl\.cnf is not a number from 0 .* to 256; the provider is not loaded" \
        "async-workers = $bad refused with a message naming it"
done
note "async-workers: abc, -1, 257 and 12x refused"
