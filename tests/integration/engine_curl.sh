#!/usr/bin/env bash
# curl 7.88 through libp11's pkcs11 engine, with client keys that
# `mtls-keystore enroll` made: what users of curl 7.88 who pass pkcs11: URIs
# get (`--engine pkcs11 --key-type ENG --key 'pkcs11:...'`; curl reads no
# provider URIs before 8.12). The engine is configured in openssl.cnf (a test
# fixture: MODULE_PATH = the SoftHSM module); our provider is not loaded on
# the client side. The server is `openssl s_server -Verify 1
# -verify_return_error` with its key in the token through our provider, and
# its page echoes the client certificate it saw.
#
# EC P-256 and RSA 2048 client keys, TLS 1.3 and 1.2, the PIN from the URI's
# pin-source (EC) and from the engine section's PIN (RSA).
. "$(dirname "$0")/../lib/common.sh"

setup_test
require_cmd curl
curl --version | head -n1 | grep -q 'OpenSSL/3\.' || skip "curl is not built with OpenSSL 3: $(curl --version | head -n1)"
enginesdir=$(openssl version -e | sed -n 's/^ENGINESDIR: "\(.*\)"$/\1/p')
[ -r "$enginesdir/pkcs11.so" ] ||
    skip "libp11's pkcs11 engine not found in $enginesdir (Debian package libengine-pkcs11-openssl)"
new_token mtls-a

enroll srv ec:P-256 server
ca_sign "$WORK/srv.csr" "$WORK/srv.pem"

# engine_cnf FILE [PIN]: openssl.cnf that loads libp11's engine for the
# SoftHSM module (and the PIN into the engine, when given).
engine_cnf() {
    {
        echo "openssl_conf = openssl_init"
        echo "[openssl_init]"
        echo "engines = engine_section"
        echo "[engine_section]"
        echo "pkcs11 = pkcs11_section"
        echo "[pkcs11_section]"
        echo "engine_id = pkcs11"
        echo "MODULE_PATH = $SOFTHSM_MODULE"
        [ -z "${2:-}" ] || echo "PIN = $2"
        echo "init = 0"
    } >"$1"
    chmod 600 "$1"
}
engine_cnf "$WORK/engine.cnf"
engine_cnf "$WORK/engine-pin.cnf" "$TEST_PIN"

n=0
for kt in ec:P-256 rsa:2048; do
    name=cli-${kt%%:*}
    enroll "$name" "$kt" client
    ca_sign "$WORK/$name.csr" "$WORK/$name.pem"
    case $kt in
    ec*) cnf=$WORK/engine.cnf key="$ENROLL_URI;pin-source=file:$PIN_FILE" pin="URI's pin-source" ;;
    rsa*) cnf=$WORK/engine-pin.cnf key=$ENROLL_URI pin="engine section's PIN" ;;
    esac
    for ver in 1.3 1.2; do
        step=$name-tls$ver
        start_server "$WORK/$step.server.log" env OPENSSL_CONF="$TOKEN_CNF" openssl s_server \
            -accept 127.0.0.1:0 -naccept 1 -www -Verify 1 -verify_return_error \
            -cert "$WORK/srv.pem" -key "$WORK/srv.key.pem" -CAfile "$MTLSKS_FIXTURE/ca.pem"
        spid=$SERVER_PID
        tls=(--tlsv1.3)
        [ "$ver" = 1.2 ] && tls=(--tlsv1.2 --tls-max 1.2)
        run_ok "$step" env OPENSSL_CONF="$cnf" curl --silent --show-error --fail --max-time 60 \
            "${tls[@]}" --cacert "$MTLSKS_FIXTURE/ca.pem" --cert "$WORK/$name.pem" \
            --engine pkcs11 --key-type ENG --key "$key" "https://localhost:$SERVER_PORT/"
        wait_pid "$spid" 30 || fail "$step: server still running 30 s after curl finished"
        if [ "$WAIT_RC" -ne 0 ]; then
            sed 's/^/    server| /' "$WORK/$step.server.log" >&2
            fail "$step: s_server exit $WAIT_RC"
        fi
        assert_grep "$WORK/$step.out" "^ *Protocol *: TLSv$ver\$" "$step: not a TLS $ver handshake"
        assert_grep "$WORK/$step.out" '^Client certificate$' "$step: the server saw no client certificate"
        assert_grep "$WORK/$step.out" "Subject: .*CN ?= ?$name(,|$)" "$step: the server saw another client certificate"
        note "$step: curl --engine pkcs11 --key-type ENG ($pin): mutual TLS ok"
        n=$((n + 1))
    done
done
note "$n curl requests through libp11's engine with keys mtls-keystore enrolled: ok"
