#!/usr/bin/env bash
# enroll when the token fails to sign the CSR after the key pair is made
# (C_Sign=CKR_DEVICE_ERROR through the fault-injecting shim, tests/p11shim):
# the error keeps the token's CKR_ name, the advice names
# `mtls-keystore delete --label NAME --yes` and `import-cert --key-ref` (to
# write the key reference later), not pkcs11-tool; following the advice
# (csr --key, or delete) works.
. "$(dirname "$0")/../lib/common.sh"

setup_test
[ -n "${MTLSKS_SHIM:-}" ] && [ -r "$MTLSKS_SHIM" ] || fail "fault-injecting shim not built (MTLSKS_SHIM=${MTLSKS_SHIM:-})"
new_token faults-enroll

# shim_enroll STEP NAME: enroll through the shim, every C_Sign failing.
shim_enroll() {
    run_rc "$1" 1 env MTLSKS_SHIM_MODULE="$SOFTHSM_MODULE" MTLSKS_SHIM_FAULTS=C_Sign=CKR_DEVICE_ERROR \
        OPENSSL_CONF="$TOKEN_CNF" "$MTLSKS_CLI" --module "$MTLSKS_SHIM" enroll --token "$TOKEN_LABEL" \
        --label "$2" --key-type ec:P-256 --usage server --subject "CN=$2" --san "DNS:$2.test" \
        --out "$WORK/$2.csr" --key-ref "$WORK/$2.key.pem"
}
shim_enroll enroll-fault srv
err=$WORK/enroll-fault.err
assert_grep "$err" 'signing the request with the key failed: .*C_Sign.*CKR_DEVICE_ERROR' \
    "enroll: the token's CKR_ name is lost from the signing error"
assert_no_grep "$err" 'EVP lib' "enroll: OpenSSL's wrapper error instead of the token's"
assert_no_grep "$err" 'pkcs11-tool' "enroll: the clean-up advice names pkcs11-tool"
assert_grep "$err" "^  mtls-keystore .*delete --label srv --token faults-enroll --yes\$" \
    "enroll: the clean-up advice does not name mtls-keystore delete"
assert_grep "$err" "import-cert --label srv --token faults-enroll --key-ref .*/srv.key.pem CERT.pem" \
    "enroll: the advice does not say import-cert --key-ref writes the key reference later"
assert_no_file "$WORK/srv.key.pem"
assert_no_file "$WORK/srv.csr"
assert_eq "$(count_objects "$TOKEN_LABEL")" 2 "objects left by the failed enroll (the key pair)"

# Finishing as advised: the CSR from the key's URI, then import-cert --key-ref
# writes the key reference, which serves.
csr_cmd=$(grep -A1 '^To finish' "$err" | sed -n '2s/^ *mtls-keystore --module [^ ]* //p')
[ -n "$csr_cmd" ] || fail "no csr command after 'To finish'"
eval "set -- $csr_cmd"
run_ok finish-csr mks "$@"
ca_sign "$WORK/srv.csr" "$WORK/srv.pem"
run_ok finish-import mks import-cert --label srv --token "$TOKEN_LABEL" --key-ref "$WORK/srv.key.pem" \
    --cert-out "$WORK/srv.crt" "$WORK/srv.pem"
run_ok finish-pub ossl pkey -in "$WORK/srv.key.pem" -pubout
run_ok finish-cert-pub plain_ossl x509 -in "$WORK/srv.crt" -noout -pubkey
assert_eq "$(cat "$WORK/finish-pub.out")" "$(cat "$WORK/finish-cert-pub.out")" \
    "the key reference import-cert wrote names another key than the certificate"

# Removing as advised: the delete command printed, without the shim.
shim_enroll enroll-fault2 gone
del_cmd=$(grep -A1 '^Or remove it' "$WORK/enroll-fault2.err" | sed -n '2s/^ *mtls-keystore --module [^ ]* //p')
eval "set -- $del_cmd"
run_ok remove mks "$@"
run_ok list-after mks list --json
assert_no_grep "$WORK/list-after.out" '"gone"' "the key pair is still there after the advised delete"
note "enroll with C_Sign failing: CKR_ name kept, advice followed (finish and remove)"
