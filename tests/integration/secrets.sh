#!/usr/bin/env bash
# Secrets stay secret.
# - The PIN (a distinctive one, from a 0600 file) never appears in a running
#   server's command line or environment, in any output of the CLI, openssl
#   or the provider (with MTLSKS_DEBUG=1 tracing every PKCS#11 call too), nor
#   in an error; neither does a wrong PIN.
# - A wrong PIN costs exactly one C_Login (counted by the PKCS#11 shim), for
#   the CLI, for a pkcs11: URI and for a key-reference file, and the error
#   says the token rejected the PIN.
# - The private half never leaves the token: `openssl pkey` writes no key
#   material (PEM, DER, text, PKCS#12), EVP_PKEY_todata with the key-pair
#   selection fails (tests/faults/pkey_export.c), while the public half
#   exports.
. "$(dirname "$0")/../lib/common.sh"

setup_test
[ -n "${MTLSKS_SHIM:-}" ] && [ -r "$MTLSKS_SHIM" ] || fail "fault-injecting shim not built (MTLSKS_SHIM=${MTLSKS_SHIM:-})"
[ -n "${MTLSKS_PKEY_EXPORT:-}" ] && [ -x "$MTLSKS_PKEY_EXPORT" ] ||
    fail "pkey_export not built (MTLSKS_PKEY_EXPORT=${MTLSKS_PKEY_EXPORT:-})"

# PINs no output could contain by chance.
TEST_PIN=Qz7-secret-PIN-4711
WRONG_PIN=Wx3-wrong-PIN-0815
new_token secrets
(
    umask 077
    printf '%s\n' "$WRONG_PIN" >"$WORK/wrong.pin"
)
export MTLSKS_DEBUG=1 # every PKCS#11 call traced to stderr: the trace must not leak either

enroll srv ec:P-256 server
URI=$ENROLL_URI
enroll cli rsa:2048 client
ca_sign "$WORK/srv.csr" "$WORK/srv.pem"
ca_sign "$WORK/cli.csr" "$WORK/cli.pem"
run_ok import-srv mks import-cert --label srv "$WORK/srv.pem"
run_ok csr mks csr --key "$WORK/srv.key.pem" --subject CN=srv --out "$WORK/renew.csr"
run_ok list mks list --json

# A running server: its command line and environment hold a file name, never
# the PIN.
start_server "$WORK/server.log" env OPENSSL_CONF="$TOKEN_CNF" openssl s_server \
    -accept 127.0.0.1:0 -naccept 1 -www -Verify 1 -verify_return_error \
    -cert "$WORK/srv.pem" -key "$WORK/srv.key.pem" -CAfile "$MTLSKS_FIXTURE/ca.pem"
spid=$(ps -o pid= --ppid "$SERVER_PID" | tr -d ' ' | head -n1)
[ -n "$spid" ] && [ -r "/proc/$spid/cmdline" ] || fail "cannot find the s_server process under $SERVER_PID"
tr '\0' ' ' <"/proc/$spid/cmdline" >"$WORK/server.cmdline"
tr '\0' '\n' <"/proc/$spid/environ" >"$WORK/server.environ"
assert_grep "$WORK/server.cmdline" 's_server' "/proc/$spid/cmdline is not the server's"
printf 'GET / HTTP/1.0\r\n\r\n' | timeout 60 env OPENSSL_CONF="$TOKEN_CNF" openssl s_client \
    -connect "127.0.0.1:$SERVER_PORT" -cert "$WORK/cli.pem" -key "$WORK/cli.key.pem" \
    -CAfile "$MTLSKS_FIXTURE/ca.pem" -verify_return_error -ign_eof >"$WORK/client.log" 2>&1 ||
    fail "the mutual-TLS handshake failed: $(tail -n3 "$WORK/client.log")"
wait_pid "$SERVER_PID" 30 || fail "server still running after its one connection"

# Wrong PINs, each costing one C_Login, through the shim (which forwards to
# SoftHSM and counts calls). count_logins FILE: C_Login calls recorded.
SHIM_CNF_NOPIN=$WORK/openssl-shim-nopin.cnf
sed "s|^pkcs11-module = .*|pkcs11-module = $MTLSKS_SHIM|" "$TOKEN_CNF_NOPIN" >"$SHIM_CNF_NOPIN"
count_logins() { awk '$2 == "C_Login" { c = $3 } END { print c + 0 }' "$1"; }
shim() { env MTLSKS_SHIM_MODULE="$SOFTHSM_MODULE" MTLSKS_SHIM_COUNTS="$WORK/$1.counts" "${@:2}"; }
echo data >"$WORK/data"

run_rc wrong-cli 1 shim wrong-cli "$MTLSKS_CLI" --config "$TOKEN_CNF_NOPIN" --module "$MTLSKS_SHIM" \
    --pin-source "file:$WORK/wrong.pin" csr --key "$URI" --subject CN=x --out "$WORK/wrong.csr"
run_fails wrong-uri shim wrong-uri env OPENSSL_CONF="$SHIM_CNF_NOPIN" openssl dgst -sha256 \
    -sign "$URI;pin-source=file:$WORK/wrong.pin" -out "$WORK/wrong-uri.sig" "$WORK/data"
run_fails wrong-passin shim wrong-passin env OPENSSL_CONF="$SHIM_CNF_NOPIN" openssl dgst -sha256 \
    -sign "$URI" -passin "file:$WORK/wrong.pin" -out "$WORK/wrong-passin.sig" "$WORK/data"
run_fails wrong-keyref shim wrong-keyref env OPENSSL_CONF="$SHIM_CNF_NOPIN" openssl dgst -sha256 \
    -sign "$WORK/srv.key.pem" -passin "file:$WORK/wrong.pin" -out "$WORK/wrong-keyref.sig" "$WORK/data"
# A server given a wrong PIN stops before it listens (the timeout only bounds
# a server that would wrongly start).
rc=0
shim wrong-server timeout 30 env OPENSSL_CONF="$SHIM_CNF_NOPIN" openssl s_server \
    -accept 127.0.0.1:0 -naccept 1 -www -cert "$WORK/srv.pem" -key "$WORK/srv.key.pem" \
    -pass "file:$WORK/wrong.pin" </dev/null >"$WORK/wrong-server.out" 2>"$WORK/wrong-server.err" || rc=$?
[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && [ "$rc" -le 125 ] ||
    fail "s_server with a wrong PIN: exit $rc, expected a clean failure before listening"
for step in wrong-cli wrong-uri wrong-passin wrong-keyref wrong-server; do
    [ -s "$WORK/$step.counts" ] || {
        sed 's/^/    | /' "$WORK/$step.err" >&2
        fail "$step: the shim recorded no calls (was it loaded?)"
    }
    assert_eq "$(count_logins "$WORK/$step.counts")" 1 "$step: C_Login calls for one wrong PIN"
done
# The messages a user reads (stderr without the MTLSKS_DEBUG trace lines).
for step in wrong-cli wrong-uri wrong-passin wrong-keyref wrong-server; do
    grep -v '^mtlsks: C_' "$WORK/$step.err" >"$WORK/$step.msg" || true
done
for step in wrong-cli wrong-uri wrong-passin; do
    assert_grep "$WORK/$step.msg" 'C_Login failed: CKR_PIN_INCORRECT' "$step: the error does not name C_Login and CKR_PIN_INCORRECT"
    assert_grep "$WORK/$step.msg" "token 'secrets' rejected the PIN" "$step: the error does not say the token rejected the PIN"
done
note "a wrong PIN: one C_Login each, for the CLI, a URI, -passin, a key file and s_server"

# Private halves stay in the token.
for key in "$WORK/srv.key.pem" "$URI" "$WORK/cli.key.pem"; do
    name=$(basename "${key%%;*}" | tr -c 'A-Za-z0-9.\n-' _)
    rm -f "$WORK/x.pem" "$WORK/x.der" "$WORK/x.txt" "$WORK/x.p12"
    run_fails "pkey-pem-$name" ossl pkey -in "$key" -out "$WORK/x.pem"
    if [ -e "$WORK/x.pem" ]; then
        assert_no_grep "$WORK/x.pem" 'PRIVATE KEY' "openssl pkey -in $key wrote a private key"
    fi
    run_fails "pkey-der-$name" ossl pkey -in "$key" -outform DER -out "$WORK/x.der"
    [ ! -s "$WORK/x.der" ] || fail "openssl pkey -outform DER -in $key wrote $(stat -c %s "$WORK/x.der") bytes"
    ossl pkey -in "$key" -text -noout >"$WORK/x.txt" 2>&1 || true
    assert_no_grep "$WORK/x.txt" '^ *(priv|privateExponent|prime1|prime2|exponent1|exponent2|coefficient):' \
        "openssl pkey -text -in $key printed private components"
    run_ok "pkey-pub-$name" ossl pkey -in "$key" -pubout -out "$WORK/pub-$name.pem"
    assert_grep "$WORK/pub-$name.pem" 'BEGIN PUBLIC KEY' "openssl pkey -pubout -in $key: no public key"
    run_ok "todata-$name" "$MTLSKS_PKEY_EXPORT" "$TOKEN_CNF" "$key"
    assert_no_grep "$WORK/todata-$name.out" '^FAIL' "pkey_export $key"
done
rm -f "$WORK/x.p12"
ossl pkcs12 -export -inkey "$WORK/srv.key.pem" -in "$WORK/srv.pem" -passout pass:x \
    -out "$WORK/x.p12" >"$WORK/p12.out" 2>&1 || true
if [ -s "$WORK/x.p12" ]; then
    plain_ossl pkcs12 -in "$WORK/x.p12" -passin pass:x -nodes -out "$WORK/p12.pem" >/dev/null 2>&1 || true
    assert_no_grep "$WORK/p12.pem" 'PRIVATE KEY' "openssl pkcs12 -export put the private key in the file"
fi
note "private halves: no export as PEM, DER, text or PKCS#12; EVP_PKEY_todata(KEYPAIR) fails; public halves export"

# Nothing anywhere shows a PIN: the outputs of every step, the server's and
# client's logs (with the PKCS#11 trace), the server's command line and
# environment.
leaks=$(grep -rlF -e "$TEST_PIN" -e "$WRONG_PIN" "$WORK" --include='*.out' --include='*.err' \
    --include='*.log' --include='server.cmdline' --include='server.environ' 2>/dev/null || true)
if [ -n "$leaks" ]; then
    for f in $leaks; do
        grep -nF -e "$TEST_PIN" -e "$WRONG_PIN" "$f" | sed "s|^|    $(basename "$f"): |" >&2
    done
    fail "a PIN appears in: $(echo "$leaks" | xargs -n1 basename | tr '\n' ' ')"
fi
grep -q 'C_Login -> CKR_OK' "$WORK"/*.err "$WORK"/*.log 2>/dev/null ||
    fail "no traced C_Login: MTLSKS_DEBUG tracing did not run, so the check above proved little"
note "no PIN in $(find "$WORK" -maxdepth 1 -type f \( -name '*.out' -o -name '*.err' -o -name '*.log' \) | wc -l) outputs, the server's argv or environment"

# Last, so that the checks above run whatever this says: a wrong PIN through
# a key-reference file (how servers, curl and Python load keys) must be
# reported as such too.
for step in wrong-keyref wrong-server; do
    assert_grep "$WORK/$step.msg" "rejected the PIN" \
        "$step: with a key-reference file the error does not say the token rejected the PIN (provider/decoder.c: the decoder's error is lost)"
done
