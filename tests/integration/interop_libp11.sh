#!/usr/bin/env bash
# Keys that `mtls-keystore enroll` makes work through libp11's pkcs11 engine,
# which is what curl 7.88 and other engine-era programs use for pkcs11: keys:
# `openssl req -engine pkcs11 -keyform engine -key URI` signs a CSR with the
# token key (EC and RSA, named by the very URI enroll printed) and the CSR
# verifies and carries the token key. Our provider is not loaded here.
. "$(dirname "$0")/../lib/common.sh"

setup_test
enginesdir=$(openssl version -e | sed -n 's/^ENGINESDIR: "\(.*\)"$/\1/p')
[ -r "$enginesdir/pkcs11.so" ] ||
    skip "libp11's pkcs11 engine not found in $enginesdir (Debian package libengine-pkcs11-openssl)"
new_token mtls-a

cat >"$WORK/engine.cnf" <<EOF2
openssl_conf = openssl_init

[openssl_init]
engines = engine_section

[engine_section]
pkcs11 = pkcs11_section

[pkcs11_section]
engine_id = pkcs11
MODULE_PATH = $SOFTHSM_MODULE
init = 0

[req]
distinguished_name = req_dn

[req_dn]
EOF2

for kt in ec:P-256 rsa:2048; do
    name=${kt//[:-]/}
    enroll "$name" "$kt" client
    spki_of_csr "$WORK/$name.csr" "$WORK/$name.enroll.pub.pem"
    run_ok "engine-req-$name" env OPENSSL_CONF="$WORK/engine.cnf" openssl req -new \
        -engine pkcs11 -keyform engine -key "$ENROLL_URI;pin-source=file:$PIN_FILE" \
        -subj "/CN=engine-$name" -sha256 -out "$WORK/$name.engine.csr"
    assert_file "$WORK/$name.engine.csr" "$kt: CSR from the engine"
    run_ok "engine-verify-$name" plain_ossl req -in "$WORK/$name.engine.csr" -verify -noout
    assert_grep "$WORK/engine-verify-$name.err" 'verify OK' "$kt: CSR signed through libp11 does not verify"
    spki_of_csr "$WORK/$name.engine.csr" "$WORK/$name.engine.pub.pem"
    assert_same_file "$WORK/$name.enroll.pub.pem" "$WORK/$name.engine.pub.pem" \
        "$kt: the engine signed with another key than the one enroll made"
    note "$kt: libp11 engine signed a CSR with the enrolled key"
done
