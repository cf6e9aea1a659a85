#!/usr/bin/env bash
# CTest fixture "softhsm" (FIXTURES_SETUP): checks the tools the integration
# tests need and builds what they share read-only in $MTLSKS_FIXTURE:
#   plain.cnf            openssl.cnf with the default provider only (the CA's side)
#   ca.key, ca.pem       the test CA that issues every certificate the tests use
#   rogue.key, rogue.pem another CA, whose certificates the servers must refuse
#   leaf.ext             extensions the CAs add to leaf certificates
#   fixture.env          sourced by tests/lib/common.sh
# Tokens are not made here: each test makes its own in its own temp directory
# (new_token in tests/lib/common.sh), so that tests run in parallel.
TEST_NAME=fixture.softhsm.setup
. "$(dirname "$0")/../lib/common.sh"

require_cmd openssl
[ -n "${MTLSKS_FIXTURE:-}" ] || fail "MTLSKS_FIXTURE is not set (run through ctest)"
case $MTLSKS_FIXTURE in
*/softhsm-fixture) ;;
*) fail "refusing to wipe unexpected fixture path $MTLSKS_FIXTURE" ;;
esac
rm -rf -- "$MTLSKS_FIXTURE"
mkdir -p "$MTLSKS_FIXTURE"
WORK=$MTLSKS_FIXTURE

for tool in softhsm2-util pkcs11-tool; do
    command -v "$tool" >/dev/null 2>&1 || note "warning: $tool missing; tests that need it will SKIP"
done
[ -r "$SOFTHSM_MODULE" ] || note "warning: $SOFTHSM_MODULE missing; SoftHSM tests will SKIP"

cat >"$MTLSKS_FIXTURE/plain.cnf" <<'CNF'
openssl_conf = openssl_init

[openssl_init]
providers = provider_sect

[provider_sect]
default = default_sect

[default_sect]
activate = 1

[req]
distinguished_name = req_dn

[req_dn]
CNF

cat >"$MTLSKS_FIXTURE/leaf.ext" <<'CNF'
[leaf]
basicConstraints = critical,CA:FALSE
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
CNF

make_ca() {
    local name=$1 cn=$2
    run_ok "ca-$name" plain_ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$MTLSKS_FIXTURE/$name.key" -out "$MTLSKS_FIXTURE/$name.pem" -days 3 \
        -subj "/CN=$cn/O=mtls-keystore tests" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -addext "subjectKeyIdentifier=hash"
    chmod 600 "$MTLSKS_FIXTURE/$name.key"
}
make_ca ca "mtls-keystore test CA"
make_ca rogue "some other CA"

cat >"$MTLSKS_FIXTURE/fixture.env" <<ENV
# written by softhsm_setup.sh
FIXTURE_CA=$MTLSKS_FIXTURE/ca.pem
FIXTURE_ROGUE_CA=$MTLSKS_FIXTURE/rogue.pem
ENV
note "fixture ready in $MTLSKS_FIXTURE"
