#!/usr/bin/env bash
# `openssl storeutl` lists a token's keys and certificates through our
# provider's STORE: everything for pkcs11:token=NAME, only keys with -keys,
# only certificates with -certs, and never the private half of a key.
# Search criteria narrow a listing: -alias (label; keys and certificates),
# -subject, -issuer with -serial, -fingerprint (certificates); each is
# checked with a value that matches and one that does not. openssl verify
# -CAstore finds an issuer on the token by subject.
# (OpenSSL 3.0's storeutl takes one of -keys/-certs at a time: "only one
# search type can be given", so `-keys -certs` is the unfiltered listing.)
. "$(dirname "$0")/../lib/common.sh"

setup_test
new_token mtls-a

enroll web ec:P-256 server
enroll api rsa:2048 client
ca_sign "$WORK/web.csr" "$WORK/web.pem"
run_ok import mks import-cert --label web "$WORK/web.pem"

TOKEN_URI="pkcs11:token=$TOKEN_LABEL"
count() { grep -Ec "^[0-9]+: $2\$" "$WORK/$1.out" || true; }

run_ok all ossl storeutl "$TOKEN_URI"
[ "$(count all Pkey)" -ge 2 ] || { sed 's/^/    | /' "$WORK/all.out" >&2; fail "storeutl $TOKEN_URI: fewer than 2 private keys"; }
assert_eq "$(count all Certificate)" 1 "storeutl $TOKEN_URI: certificates"
assert_no_grep "$WORK/all.out" 'BEGIN (RSA |EC |ENCRYPTED )?PRIVATE KEY' "storeutl printed a private key"

run_ok keys ossl storeutl -keys "$TOKEN_URI"
[ "$(count keys Pkey)" -ge 2 ] || { sed 's/^/    | /' "$WORK/keys.out" >&2; fail "storeutl -keys: fewer than 2 private keys"; }
assert_eq "$(count keys Certificate)" 0 "storeutl -keys: certificates"
assert_no_grep "$WORK/keys.out" 'BEGIN (RSA |EC |ENCRYPTED )?PRIVATE KEY' "storeutl -keys printed a private key"

run_ok certs ossl storeutl -certs "$TOKEN_URI"
assert_eq "$(count certs Certificate)" 1 "storeutl -certs: certificates"
assert_eq "$(count certs Pkey)" 0 "storeutl -certs: private keys"
assert_grep "$WORK/certs.out" '^Total found: 1$' "storeutl -certs: total"

# Search criteria.
subject=$(plain_ossl x509 -in "$WORK/web.pem" -noout -subject -nameopt compat | sed 's/^subject=//')
issuer=$(plain_ossl x509 -in "$WORK/web.pem" -noout -issuer -nameopt compat | sed 's/^issuer=//')
serial=0x$(plain_ossl x509 -in "$WORK/web.pem" -noout -serial | sed 's/^serial=//')
fp=$(plain_ossl x509 -in "$WORK/web.pem" -noout -fingerprint -sha256 | sed 's/^.*=//; s/://g')
found() {
    local step=$1 want=$2
    shift 2
    run_ok "$step" ossl storeutl "$@" "$TOKEN_URI"
    assert_grep "$WORK/$step.out" "^Total found: $want\$" "storeutl $*: objects found"
}
found subject 1 -certs -subject "$subject"
found subject-none 0 -certs -subject "/CN=nobody"
found issuer-serial 1 -certs -issuer "$issuer" -serial "$serial"
found issuer-serial-none 0 -certs -issuer "$issuer" -serial 0x1234
found fingerprint 1 -certs -fingerprint "$fp" -sha256
found fingerprint-none 0 -certs -fingerprint "$(printf '%064d' 0)" -sha256
found alias-web 3 -alias web
found alias-api 2 -alias api
found alias-none 0 -alias nobody
assert_grep "$WORK/alias-api.out" '^[0-9]+: Pkey$' "storeutl -alias api: the private key"


# One key by its URI; -text never shows private key material.
run_ok key-text ossl storeutl -noout -text "$(key_uri web)"
assert_grep "$WORK/key-text.out" '^0: Pkey$' "storeutl $(key_uri web): not one private key"
assert_grep "$WORK/key-text.out" '^Total found: 1$' "storeutl $(key_uri web): total"
assert_no_grep "$WORK/key-text.out" '^ *priv(ate[ -]exponent)?:' "storeutl -text shows private key material"

# Without a PIN (config without pin source, no terminal) the public objects
# are still listed and nothing crashes.
run_ok nopin env OPENSSL_CONF="$TOKEN_CNF_NOPIN" openssl storeutl -certs "$TOKEN_URI" </dev/null
assert_eq "$(count nopin Certificate)" 1 "storeutl -certs without a PIN: certificates"

# An issuer found on the token by subject: verification with -CAstore.
run_ok import-chain mks import-cert --label web --chain "$MTLSKS_FIXTURE/ca.pem" "$WORK/web.pem"
run_ok verify-castore ossl verify -CAstore "$TOKEN_URI;type=cert" "$WORK/web.pem"
assert_grep "$WORK/verify-castore.out" 'web.pem: OK' "openssl verify -CAstore on the token"
