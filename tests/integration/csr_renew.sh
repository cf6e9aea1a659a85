#!/usr/bin/env bash
# `mtls-keystore csr` makes a new CSR for a key that exists (renewal with the
# same key), given by URI or by key-reference file, with the PIN from the
# config, from --pin-source, and with --config instead of OPENSSL_CONF. Each
# CSR verifies, carries the new subject and SANs and the same public key as
# the enrollment CSR; --force replaces an existing output file.
. "$(dirname "$0")/../lib/common.sh"

setup_test
new_token mtls-a

enroll web ec:P-256 server
URI=$ENROLL_URI
spki_of_csr "$WORK/web.csr" "$WORK/enroll.pub.pem"

check_csr() {
    local csr=$1 cn=$2
    assert_file "$csr" "CSR"
    run_ok "verify-$(basename "$csr")" plain_ossl req -in "$csr" -verify -noout
    run_ok "text-$(basename "$csr")" plain_ossl req -in "$csr" -noout -text
    assert_grep "$WORK/text-$(basename "$csr").out" "Subject: .*CN ?= ?$cn" "$csr: subject CN"
    assert_grep "$WORK/text-$(basename "$csr").out" "DNS:$cn" "$csr: SAN DNS:$cn"
    assert_grep "$WORK/text-$(basename "$csr").out" 'TLS Web Server Authentication' "$csr: EKU serverAuth"
    assert_no_grep "$WORK/text-$(basename "$csr").out" 'Field Type' "$csr: explicit EC parameters"
    spki_of_csr "$csr" "$csr.pub.pem"
    assert_same_file "$WORK/enroll.pub.pem" "$csr.pub.pem" "$csr: not the enrolled key"
}

# By URI, PIN from the config's pkcs11-pin-source (OPENSSL_CONF).
run_ok csr-uri mks csr --key "$URI" --subject "CN=renew1.test,O=Example Org" \
    --san DNS:renew1.test --usage server --out "$WORK/renew1.csr"
check_csr "$WORK/renew1.csr" renew1.test

# By key-reference file.
run_ok csr-keyref mks csr --key "$WORK/web.key.pem" --subject "CN=renew2.test" \
    --san DNS:renew2.test --usage server --out "$WORK/renew2.csr"
check_csr "$WORK/renew2.csr" renew2.test

# --config FILE (no OPENSSL_CONF) and --pin-source on the command line, with a
# config that names no PIN source.
run_ok csr-pinsource "$MTLSKS_CLI" --config "$TOKEN_CNF_NOPIN" --pin-source "file:$PIN_FILE" \
    csr --key "$URI" --subject "CN=renew3.test" --san DNS:renew3.test --usage server \
    --out "$WORK/renew3.csr"
check_csr "$WORK/renew3.csr" renew3.test

# --force replaces an existing CSR.
run_ok csr-force mks csr --key "$URI" --subject "CN=renew4.test" --san DNS:renew4.test \
    --usage server --out "$WORK/renew1.csr" --force
check_csr "$WORK/renew1.csr" renew4.test

# The public half alone is not enough: a URI naming no private key fails.
run_rc csr-nokey 1 mks csr --key "pkcs11:token=$TOKEN_LABEL;object=no-such-key;type=private" \
    --subject "CN=x" --out "$WORK/nokey.csr"
assert_grep "$WORK/csr-nokey.err" 'no-such-key|not found|no (such )?key' \
    "csr for a missing key: message does not say what is missing"
assert_no_file "$WORK/nokey.csr" "csr for a missing key left a file"
