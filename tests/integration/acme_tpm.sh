#!/usr/bin/env bash
# acme_tpm.sh
#
# enroll --acme --tpm against pebble with a key made in an swtpm: the key
# file (TSS2 PRIVATE KEY) is --key-ref, the ACME account key is a TPM key
# file acme-account.key.pem in the state directory, made at first use; the
# certificate certifies the TPM key (as our provider reads it from the key
# file) and chains to pebble's root. renew --label hands over to a new TPM
# key (KEY.next, then KEY, the old pair kept as .old), and a server with
# the TPM key completes mutual TLS with a client whose key is in a token.
# No transient object is left in the TPM after any step.
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/tpm.sh"
. "$(dirname "$0")/../lib/acme.sh"

setup_tpm_test_on_swtpm
require_acme
add_token acme
TOKEN_LABEL=acme
acme_start

note "enroll a TPM key"
run_ok acme-enroll-tpm mks_acme enroll --acme "$ACME_DIR" --acme-ca-bundle "$ACME_CA_BUNDLE" \
    --tpm --label tpmsrv --san DNS:tpmsrv.test --san IP:127.0.0.1 \
    --http-01 "127.0.0.1:$ACME_HTTP_PORT" --cert-out "$WORK/tpmsrv.crt" \
    --key-ref "$WORK/tpmsrv.key.pem" --chain-out "$WORK/tpmsrv.chain.pem"
assert_grep "$WORK/tpmsrv.key.pem" 'BEGIN TSS2 PRIVATE KEY' "--key-ref is not a TPM key file"
assert_eq "$(file_mode "$WORK/tpmsrv.key.pem")" 600 "mode of the TPM key file"
assert_grep "$ACME_STATE/acme-account.key.pem" 'BEGIN TSS2 PRIVATE KEY' "no TPM account key in the state directory"
assert_eq "$(file_mode "$ACME_STATE/acme-account.key.pem")" 600 "mode of the account key file"
assert_grep "$ACME_STATE/tpmsrv.json" '"backend": *"tpm"' "the state does not say TPM"
pubkey_via tpm-pub "$WORK/tpmsrv.key.pem" "$WORK/tpmsrv.pub.pem"
run_ok cert-pub plain_ossl x509 -in "$WORK/tpmsrv.crt" -noout -pubkey -out "$WORK/tpmsrv.cert-pub.pem"
assert_same_file "$WORK/tpmsrv.cert-pub.pem" "$WORK/tpmsrv.pub.pem" "the certificate is not for the TPM key"
run_ok san plain_ossl x509 -in "$WORK/tpmsrv.crt" -noout -ext subjectAltName
assert_grep "$WORK/san.out" 'IP Address:127\.0\.0\.1' "the certificate lacks IP:127.0.0.1 (RFC 8738)"
assert_chains_to_pebble "$WORK/tpmsrv.crt" "the TPM key's certificate"
tpm_assert_no_transient "$TPM_TCTI" "enroll --acme --tpm"

note "renew: a new TPM key, handed over"
cp "$WORK/tpmsrv.key.pem" "$WORK/tpmsrv.key.first"
run_ok acme-renew-tpm mks_acme renew --label tpmsrv
assert_grep "$WORK/acme-renew-tpm.out" "^renewed: +'tpmsrv', new key" "renew did not say so"
assert_file "$WORK/tpmsrv.key.pem.old" "the retired TPM key file"
assert_same_file "$WORK/tpmsrv.key.pem.old" "$WORK/tpmsrv.key.first" "the retired key file is not the first key"
cmp -s "$WORK/tpmsrv.key.pem" "$WORK/tpmsrv.key.first" && fail "the key file still holds the first key"
assert_no_file "$WORK/tpmsrv.key.pem.next" "the pending key file after the hand-over"
pubkey_via tpm-pub2 "$WORK/tpmsrv.key.pem" "$WORK/tpmsrv.pub2.pem"
run_ok cert-pub2 plain_ossl x509 -in "$WORK/tpmsrv.crt" -noout -pubkey -out "$WORK/tpmsrv.cert-pub2.pem"
assert_same_file "$WORK/tpmsrv.cert-pub2.pem" "$WORK/tpmsrv.pub2.pem" "the renewed certificate is not for the new TPM key"
tpm_assert_no_transient "$TPM_TCTI" "renew of a TPM key"

note "mutual TLS: the TPM key serves, a token key is the client"
acme_enroll cli --usage client --chain-out "$WORK/cli.chain.pem"
TLS_CAFILE=$ACME_ROOT
TLS_CLIENT_ARGS=(-cert_chain "$WORK/cli.chain.pem")
tls_handshake acme-tpm-mtls 1_3 "$WORK/tpmsrv.crt" "$WORK/tpmsrv.key.pem" "$WORK/cli.crt" \
    "$WORK/cli.key.pem" -cert_chain "$WORK/tpmsrv.chain.pem"
tpm_assert_no_transient "$TPM_TCTI" "the handshake"
note "ok"
