#!/usr/bin/env bash
# The server (key in the token, `s_server -Verify 1 -verify_return_error`)
# refuses clients it must refuse: one with no certificate and one whose
# certificate another CA issued (TLS 1.3 and 1.2). The client's s_client fails,
# the server's log says why and its page is never served. And a program given a
# token key with someone else's certificate refuses to use the pair (the
# provider's key match must say "different", not just "equal").
. "$(dirname "$0")/../lib/common.sh"

setup_test
new_token mtls-a

enroll srv ec:P-256 server
enroll cli ec:P-256 client
ca_sign "$WORK/srv.csr" "$WORK/srv.pem"
ca_sign "$WORK/cli.csr" "$WORK/rogue-cli.pem" rogue

# tls_refused STEP TLSVER SERVER_REASON [s_client cert/key args...]
tls_refused() {
    local step=$1 ver=$2 reason=$3 rc=0
    shift 3
    start_server "$WORK/$step.server.log" env OPENSSL_CONF="$TOKEN_CNF" openssl s_server \
        -accept 127.0.0.1:0 -naccept 1 -www -Verify 1 -verify_return_error \
        -cert "$WORK/srv.pem" -key "$WORK/srv.key.pem" -CAfile "$MTLSKS_FIXTURE/ca.pem"
    local spid=$SERVER_PID
    printf 'GET / HTTP/1.0\r\n\r\n' | timeout 60 env OPENSSL_CONF="$TOKEN_CNF" openssl s_client \
        -connect "127.0.0.1:$SERVER_PORT" "-tls$ver" -CAfile "$MTLSKS_FIXTURE/ca.pem" \
        -verify_return_error -ign_eof "$@" >"$WORK/$step.client.log" 2>&1 || rc=$?
    wait_pid "$spid" 30 || fail "$step: server still running 30 s after the client finished"
    if [ "$rc" -eq 0 ] || [ "$rc" -gt 125 ]; then
        sed 's/^/    client| /' "$WORK/$step.client.log" >&2
        sed 's/^/    server| /' "$WORK/$step.server.log" >&2
        fail "$step: s_client exit $rc, expected a clean failure (1..125)"
    fi
    [ "$WAIT_RC" -le 125 ] || fail "$step: s_server crashed (exit $WAIT_RC)"
    assert_grep "$WORK/$step.server.log" "$reason" "$step: the server's log does not give the reason"
    assert_no_grep "$WORK/$step.client.log" '^Client certificate$|HTTP/1.0 200' \
        "$step: the server served its page to a client it must refuse"
    note "$step: refused ($reason)"
}

for ver in 1_3 1_2; do
    tls_refused "no-cert-tls$ver" "$ver" 'peer did not return a certificate'
    tls_refused "rogue-ca-tls$ver" "$ver" \
        'unable to get local issuer certificate|certificate verify failed' \
        -cert "$WORK/rogue-cli.pem" -key "$WORK/cli.key.pem"
done

# A certificate that is not the key's: s_client refuses to start.
run_fails mismatch env OPENSSL_CONF="$TOKEN_CNF" openssl s_client -connect 127.0.0.1:1 \
    -cert "$WORK/srv.pem" -key "$WORK/cli.key.pem" </dev/null
assert_grep "$WORK/mismatch.err" 'does not match|key values mismatch|check_private_key|error setting private key' \
    "s_client with srv.pem and cli's key: no key-mismatch error"
