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
note "import-cert: ok"
