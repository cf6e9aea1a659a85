#!/usr/bin/env bash
# A test CA issues certificates for CSRs that `enroll` made; `import-cert`
# stores them beside their keys, where `pkcs11:...;object=NAME;type=cert`
# finds them (through our provider's STORE) and pkcs11-tool sees them with the
# key's CKA_ID. A certificate for another key (a software key, or another token
# key) is refused with exit 1 and a message about the mismatch, and leaves the
# token unchanged.
. "$(dirname "$0")/../lib/common.sh"

setup_test
require_cmd pkcs11-tool
new_token mtls-a

enroll web ec:P-256 client
enroll api rsa:2048 client
ca_sign "$WORK/web.csr" "$WORK/web.pem"
ca_sign "$WORK/api.csr" "$WORK/api.pem"
software_client foreign ca

fingerprint() { plain_ossl x509 -in "$1" -noout -fingerprint -sha256; }

# --- foreign certificates are refused ----------------------------------------
before=$(count_objects "$TOKEN_LABEL")
run_rc import-foreign 1 mks import-cert --label web "$WORK/foreign.pem"
assert_grep "$WORK/import-foreign.err" 'match|belong|public key|not .*key' \
    "refusing a foreign certificate: message does not mention the key mismatch"
run_rc import-crossed 1 mks import-cert --label web "$WORK/api.pem"
assert_grep "$WORK/import-crossed.err" 'match|belong|public key|not .*key' \
    "refusing another token key's certificate: message does not mention the key mismatch"
assert_eq "$(count_objects "$TOKEN_LABEL")" "$before" "objects on the token after refused imports"

# --- matching certificates are stored ----------------------------------------
run_ok import-web mks import-cert --label web "$WORK/web.pem"
run_ok import-api mks import-cert --label api --token "$TOKEN_LABEL" "$WORK/api.pem"
assert_eq "$(count_objects "$TOKEN_LABEL")" "$((before + 2))" "objects on the token after two imports"

for name in web api; do
    run_ok "storeutl-$name" ossl storeutl -certs "$(cert_uri "$name")"
    assert_grep "$WORK/storeutl-$name.out" '^0: Certificate$' "$name: storeutl found no certificate"
    assert_grep "$WORK/storeutl-$name.out" '^Total found: 1$' "$name: storeutl found more or less than one object"
    sed -n '/-----BEGIN CERTIFICATE-----/,/-----END CERTIFICATE-----/p' \
        "$WORK/storeutl-$name.out" >"$WORK/$name.fromtoken.pem"
    assert_eq "$(fingerprint "$WORK/$name.fromtoken.pem")" "$(fingerprint "$WORK/$name.pem")" \
        "$name: certificate loaded from the token vs the one imported"

    # pkcs11-tool: a certificate object with the key's label and CKA_ID.
    run_ok "p11-$name" p11tool_ --token-label "$TOKEN_LABEL" --list-objects --type cert
    assert_grep "$WORK/p11-$name.out" "^ *label: *$name\$" "$name: pkcs11-tool sees no certificate labelled $name"
    run_ok "p11-keys-$name" p11tool_ --token-label "$TOKEN_LABEL" --login --pin "$TEST_PIN" \
        --list-objects --type privkey
    cert_id=$(awk -v l="$name" '/^ *label:/ { hit = ($2 == l) } hit && /^ *ID:/ { print $2; exit }' \
        "$WORK/p11-$name.out")
    key_id=$(awk -v l="$name" '/^ *label:/ { hit = ($2 == l) } hit && /^ *ID:/ { print $2; exit }' \
        "$WORK/p11-keys-$name.out")
    [ -n "$key_id" ] || fail "$name: no key id found"
    assert_eq "$cert_id" "$key_id" "$name: certificate CKA_ID vs key CKA_ID"
done

# --- a CA step that drops the CSR's extensions is warned about -----------------
# sign_plain CSR OUT [ARGS...]: the test CA signs as a hand-written
# `openssl x509 -req` does: without -copy_extensions, the CSR's SANs and EKU
# are dropped.
sign_plain() {
    local csr=$1 out=$2
    shift 2
    run_ok "sign-plain-$(basename "$out")" plain_ossl x509 -req -in "$csr" -CA "$MTLSKS_FIXTURE/ca.pem" \
        -CAkey "$MTLSKS_FIXTURE/ca.key" -set_serial "0x$(od -An -tx1 -N8 /dev/urandom | tr -d ' \n')" \
        -days 2 "$@" -out "$out"
}
lost_re='warning: .* lacks what the key.s CSR asked for .*-copy_extensions copy'
for step in import-web import-api; do
    assert_no_grep "$WORK/$step.err" 'lacks' "$step: a certificate with the CSR's extensions drew a warning"
done
# A first certificate without them: no extendedKeyUsage, which every CSR asks for.
enroll bare ec:P-256 server
sign_plain "$WORK/bare.csr" "$WORK/bare.pem"
run_ok import-bare mks import-cert --label bare "$WORK/bare.pem"
assert_grep "$WORK/import-bare.err" "$lost_re" "a certificate without the CSR's extensions: no warning"
assert_grep "$WORK/import-bare.err" 'bare.pem lacks .*extendedKeyUsage, and subjectAltName' \
    "the warning does not name what is missing"
# A renewal: the CSR asks for the previous certificate's SANs and usage.
run_ok renew-web mks renew --label web --out "$WORK/web-next.csr"
sign_plain "$WORK/web-next.csr" "$WORK/web-next-bare.pem"
run_ok import-web-bare mks import-cert --label web "$WORK/web-next-bare.pem"
assert_grep "$WORK/import-web-bare.err" "$lost_re" "a renewed certificate without the CSR's extensions: no warning"
assert_grep "$WORK/import-web-bare.err" 'DNS:web.test, DNS:localhost, IP:127.0.0.1, clientAuth' \
    "the warning does not name the SANs and usage the renewal lost"
# The same CA step with -copy_extensions copy, as the warning says: no warning.
run_ok renew-api mks renew --label api --out "$WORK/api-next.csr"
sign_plain "$WORK/api-next.csr" "$WORK/api-next.pem" -copy_extensions copy
run_ok import-api-next mks import-cert --label api "$WORK/api-next.pem"
assert_no_grep "$WORK/import-api-next.err" 'lacks|copy_extensions' "a certificate issued with -copy_extensions copy drew a warning"
note "import-cert: ok"
