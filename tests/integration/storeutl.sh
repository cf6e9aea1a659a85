#!/usr/bin/env bash
# `openssl storeutl` lists a token's keys and certificates through our
# provider's STORE: everything for pkcs11:token=NAME, only keys with -keys,
# only certificates with -certs, and never the private half of a key.
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

# One key by its URI; -text never shows private key material.
run_ok key-text ossl storeutl -noout -text "$(key_uri web)"
assert_grep "$WORK/key-text.out" '^0: Pkey$' "storeutl $(key_uri web): not one private key"
assert_grep "$WORK/key-text.out" '^Total found: 1$' "storeutl $(key_uri web): total"
assert_no_grep "$WORK/key-text.out" '^ *priv(ate[ -]exponent)?:' "storeutl -text shows private key material"

# Without a PIN (config without pin source, no terminal) the public objects
# are still listed and nothing crashes.
run_ok nopin env OPENSSL_CONF="$TOKEN_CNF_NOPIN" openssl storeutl -certs "$TOKEN_URI" </dev/null
assert_eq "$(count nopin Certificate)" 1 "storeutl -certs without a PIN: certificates"
