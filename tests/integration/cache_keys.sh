#!/usr/bin/env bash
# pkcs11-cache-keys in the provider's section of openssl.cnf: by default a
# key signs through a session-object copy of itself, made once (one
# C_CopyObject per process here: one login); with "no" the token object
# signs and nothing is copied; a value that is neither yes nor no stops the
# provider from loading. The PKCS#11 shim counts the calls that reach the
# token.
. "$(dirname "$0")/../lib/common.sh"

setup_test
[ -n "${MTLSKS_SHIM:-}" ] && [ -r "$MTLSKS_SHIM" ] || fail "PKCS#11 shim not built (MTLSKS_SHIM=${MTLSKS_SHIM:-})"

new_token cache
enroll srv ec:P-256 server
URI=$ENROLL_URI
echo data >"$WORK/data"
# shim_cnf FILE [VALUE]: openssl.cnf on the shim, with pkcs11-cache-keys = VALUE.
shim_cnf() {
    sed "s|^pkcs11-module = .*|pkcs11-module = $MTLSKS_SHIM|" "$TOKEN_CNF" >"$1"
    [ -z "${2:-}" ] || sed -i "/^pkcs11-module = /a pkcs11-cache-keys = $2" "$1"
    [ -z "${2:-}" ] || grep -q "^pkcs11-cache-keys = $2$" "$1" || fail "$1 lacks pkcs11-cache-keys"
}
count() { awk -v f="$2" '$2 == f { c = $3 } END { print c + 0 }' "$1"; }
# sign STEP CNF: one signature through CNF, checked with the public key.
sign() {
    run_ok "$1" env MTLSKS_SHIM_MODULE="$SOFTHSM_MODULE" MTLSKS_SHIM_COUNTS="$WORK/$1.counts" \
        OPENSSL_CONF="$2" openssl dgst -sha256 -sign "$URI" -out "$WORK/$1.sig" "$WORK/data"
    run_ok "$1-verify" plain_ossl dgst -sha256 -verify "$WORK/srv.pub.pem" \
        -signature "$WORK/$1.sig" "$WORK/data"
}
spki_of_csr "$WORK/srv.csr" "$WORK/srv.pub.pem"

for v in "" yes YES true; do
    shim_cnf "$WORK/cache-$v.cnf" "$v"
    sign "cache-${v:-default}" "$WORK/cache-$v.cnf"
    assert_eq "$(count "$WORK/cache-${v:-default}.counts" C_CopyObject)" 1 \
        "pkcs11-cache-keys=${v:-(unset)}: C_CopyObject calls"
done
for v in no off false; do
    shim_cnf "$WORK/nocache-$v.cnf" "$v"
    sign "nocache-$v" "$WORK/nocache-$v.cnf"
    assert_eq "$(count "$WORK/nocache-$v.counts" C_CopyObject)" 0 \
        "pkcs11-cache-keys=$v: C_CopyObject calls"
    assert_eq "$(count "$WORK/nocache-$v.counts" C_Sign)" 1 "pkcs11-cache-keys=$v: C_Sign calls"
done

# A value that is neither yes nor no: the provider does not load (openssl
# goes on without it and says nothing of why), so the key cannot be used.
shim_cnf "$WORK/bad.cnf" maybe
run_ok providers-good env OPENSSL_CONF="$WORK/nocache-no.cnf" openssl list -providers
assert_grep "$WORK/providers-good.out" "^  mtlsks" "pkcs11-cache-keys = no: the provider loads"
run_ok providers-bad env OPENSSL_CONF="$WORK/bad.cnf" openssl list -providers
assert_no_grep "$WORK/providers-bad.out" "^  mtlsks" "pkcs11-cache-keys = maybe: the provider does not load"
run_fails bad env MTLSKS_SHIM_MODULE="$SOFTHSM_MODULE" OPENSSL_CONF="$WORK/bad.cnf" \
    openssl dgst -sha256 -sign "$URI" -out "$WORK/bad.sig" "$WORK/data"
note "pkcs11-cache-keys: default and yes copy the key once, no signs with the token object"
