#!/usr/bin/env bash
# acme_enroll.sh ec|rsa
#
# enroll --acme against pebble (tests/lib/acme.sh) with the built-in http-01
# responder, the key made in a SoftHSM token:
# - the ACME account key 'acme-account' (EC P-256) is made in the same token
#   at the first enrollment and reused (same account) by the second;
# - the certificate is the token key's (its public key is the one
#   pkcs11-tool reads from the token), stored beside it under its label,
#   its intermediate as NAME.chain; --cert-out holds leaf and intermediate,
#   --chain-out the intermediate, --key-ref names the key (0600); all of it
#   chains to pebble's root (management /roots/0);
# - the state file is 0600 and holds no secret; enrolling the label again is
#   refused (renew is the way);
# - no status line when stderr is not a terminal; on a terminal (ec run) one
#   line, redrawn in place, says what the CA is doing and for how long;
# - (ec run) --acme-account-key names another token key: another account;
# - mutual TLS between the ACME-issued server and client certificates
#   (pebble issues both EKUs), both keys in the token, trusting only
#   pebble's root (s_server / s_client).
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/acme.sh"
. "$(dirname "$0")/../lib/tpm.sh" # run_pty

case ${1:-ec} in
ec) TYPE=ec:P-256 ;;
rsa) TYPE=rsa:2048 ;;
*) fail "usage: acme_enroll.sh ec|rsa" ;;
esac

setup_test
require_acme
new_token acme
acme_start

note "first enrollment: the account key is made"
acme_enroll srv --key-type "$TYPE" --usage server --chain-out "$WORK/srv.chain.pem" \
    --contact mailto:ops@example.test
out=$WORK/acme-enroll-srv.out err=$WORK/acme-enroll-srv.err
assert_grep "$out" '^acme: .*account https://127\.0\.0\.1:[0-9]+/.* \(new\)' "no new account reported"
assert_grep "$err" "made the ACME account key 'acme-account'" "the account key was not made"
assert_grep "$out" '^enrolled: +in [0-9.]+ s, [0-9]+ signatures in hardware' "no summary line"
assert_no_grep "$err" $'\r|\033' "a status line was drawn although stderr is not a terminal"
account1=$(sed -n 's/^acme: .*account \([^ ]*\).*/\1/p' "$out")

run_ok objs p11tool_ --token-label acme --login --pin "$TEST_PIN" --list-objects
[ -n "$(p11_object_block "$WORK/objs.out" "Private Key Object" acme-account)" ] ||
    fail "no private key acme-account in the token"
p11_object_block "$WORK/objs.out" "Private Key Object" acme-account | grep -q 'EC' ||
    fail "the account key is not an EC key"

note "the certificate is the token key's, stored beside it, chained to pebble's root"
[ "$(grep -c 'BEGIN CERTIFICATE' "$WORK/srv.crt")" -eq 2 ] || fail "--cert-out is not leaf + intermediate"
[ "$(grep -c 'BEGIN CERTIFICATE' "$WORK/srv.chain.pem")" -eq 1 ] || fail "--chain-out is not the intermediate"
spki_from_token srv "$WORK/srv.token-pub.pem"
run_ok srv-cert-pub plain_ossl x509 -in "$WORK/srv.crt" -noout -pubkey -out "$WORK/srv.cert-pub.pem"
assert_same_file "$WORK/srv.cert-pub.pem" "$WORK/srv.token-pub.pem" "the certificate's key is not the token key"
run_ok srv-san plain_ossl x509 -in "$WORK/srv.crt" -noout -ext subjectAltName,extendedKeyUsage
assert_grep "$WORK/srv-san.out" 'DNS:srv\.test' "the certificate lacks DNS:srv.test"
assert_chains_to_pebble "$WORK/srv.crt" "srv's certificate"
run_ok read-cert p11tool_ --token-label acme --read-object --type cert --label srv -o "$WORK/srv.token.der"
run_ok leaf-der plain_ossl x509 -in "$WORK/srv.crt" -outform DER -out "$WORK/srv.leaf.der"
assert_same_file "$WORK/srv.token.der" "$WORK/srv.leaf.der" "the token's certificate 'srv' is not the issued one"
assert_grep "$WORK/objs.out" 'label: +srv\.chain' "the intermediate is not stored as srv.chain"
assert_eq "$(file_mode "$WORK/srv.key.pem")" 600 "mode of the key reference"
assert_grep "$WORK/srv.key.pem" 'BEGIN PKCS#11 PROVIDER URI' "--key-ref is not a key reference"

note "the state file: 0600, no secrets"
state=$ACME_STATE/srv.json
assert_file "$state" "state file"
assert_eq "$(file_mode "$state")" 600 "mode of the state file"
assert_grep "$state" '"directory": *"https://127\.0\.0\.1' "the state does not record the directory"
assert_grep "$state" '"account_url"' "the state does not record the account"
assert_no_grep "$state" "\"$TEST_PIN\"|pin-value|BEGIN .*PRIVATE" "the state holds a secret"
ls -a "$WORK" "$ACME_STATE" | grep -E '\.tmp|~$' && fail "temporary files left behind"

note "second enrollment: same account, no second account key"
acme_enroll cli --key-type "$TYPE" --usage client --chain-out "$WORK/cli.chain.pem"
assert_no_grep "$WORK/acme-enroll-cli.out" '\(new\)' "a second account was registered"
assert_grep "$WORK/acme-enroll-cli.out" "account $account1" "another account was used"
assert_no_grep "$WORK/acme-enroll-cli.err" 'made the ACME account key' "the account key was made again"
run_ok objs2 p11tool_ --token-label acme --login --pin "$TEST_PIN" --list-objects --type privkey
assert_eq "$(grep -c 'label: *acme-account$' "$WORK/objs2.out")" 1 "account keys in the token"
assert_chains_to_pebble "$WORK/cli.crt" "cli's certificate"

note "enrolling srv again is refused"
run_fails again mks_acme enroll --acme "$ACME_DIR" --acme-ca-bundle "$ACME_CA_BUNDLE" \
    --token acme --label srv --san DNS:srv.test --http-01 "127.0.0.1:$ACME_HTTP_PORT" \
    --cert-out "$WORK/srv2.crt" --key-ref "$WORK/srv2.key.pem"
assert_grep "$WORK/again.err" "'srv' is enrolled already .*renew --label srv" "no pointer to renew"

if [ "$TYPE" = ec:P-256 ]; then
    note "on a terminal: the status line"
    acme_enroll_cmd tty
    run_pty tty -- env OPENSSL_CONF="$TOKEN_CNF" MTLSKS_STATE_DIR="$ACME_STATE" "$MTLSKS_CLI" \
        "${ACME_CMD[@]:1}"
    assert_grep "$WORK/tty.out" $'\r\033\\[Kmtls-keystore: the CA is validating DNS:tty\\.test \\(http-01\\) [0-9]+\\.[0-9] s' \
        "no status line while the CA validates"
    assert_grep "$WORK/tty.out" $'\r\033\\[Kmtls-keystore: the CA is issuing the certificate [0-9]+\\.[0-9] s' \
        "no status line while the CA issues"
    assert_grep "$WORK/tty.out" '^enrolled: ' "the enrollment on a terminal"

    note "--acme-account-key: another hardware key, another account"
    run_ok other-key mks enroll --token acme --label other-account --subject CN=account \
        --out "$WORK/other-account.csr" --key-ref "$WORK/other-account.key.pem"
    acme_enroll third --acme-account-key "$WORK/other-account.key.pem"
    assert_grep "$WORK/acme-enroll-third.out" '\(new\)' "no new account for another key"
    assert_no_grep "$WORK/acme-enroll-third.out" "account $account1" "the default account was used"
    assert_grep "$ACME_STATE/third.json" "\"account_key\": *\"$WORK/other-account.key.pem\"" \
        "the state does not record the account key"
fi

note "mutual TLS with the ACME-issued certificates, trusting pebble's root only"
TLS_CAFILE=$ACME_ROOT
TLS_CLIENT_ARGS=(-cert_chain "$WORK/cli.chain.pem")
tls_handshake acme-mtls-13 1_3 "$WORK/srv.crt" "$WORK/srv.key.pem" "$WORK/cli.crt" \
    "$WORK/cli.key.pem" -cert_chain "$WORK/srv.chain.pem"
tls_handshake acme-mtls-12 1_2 "$WORK/srv.crt" "$WORK/srv.key.pem" "$WORK/cli.crt" \
    "$WORK/cli.key.pem" -cert_chain "$WORK/srv.chain.pem"
note "ok"
