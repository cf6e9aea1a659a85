#!/usr/bin/env bash
# Keys that `mtls-keystore enroll` makes stay in the token: pkcs11-tool (not our
# code) shows each private key sensitive, always sensitive, never extractable
# and generated on the token (local), private (invisible without login), able
# to sign (and to decrypt only when RSA), with its public key object beside it
# and CKA_ID = SHA-1 of the public key bits (as X.509's subjectKeyIdentifier).
. "$(dirname "$0")/../lib/common.sh"

setup_test
require_cmd pkcs11-tool
new_token mtls-a

enroll ec-key ec:P-256 client
enroll rsa-key rsa:2048 client

run_ok list-login p11tool_ --token-label "$TOKEN_LABEL" --login --pin "$TEST_PIN" --list-objects
run_ok list-nologin p11tool_ --token-label "$TOKEN_LABEL" --list-objects

block() { p11_object_block "$@"; }

for key in ec-key rsa-key; do
    block "$WORK/list-login.out" "Private Key Object" "$key" >"$WORK/$key.priv.txt"
    [ -s "$WORK/$key.priv.txt" ] || {
        sed 's/^/    | /' "$WORK/list-login.out" >&2
        fail "$key: no private key object with that label on the token"
    }
    assert_grep "$WORK/$key.priv.txt" '^ *Access: *sensitive, always sensitive, never extractable, local' \
        "$key: private key not sensitive/never extractable/local"
    assert_grep "$WORK/$key.priv.txt" '^ *Usage:.*sign' "$key: private key cannot sign"

    block "$WORK/list-login.out" "Public Key Object" "$key" >"$WORK/$key.pub.txt"
    [ -s "$WORK/$key.pub.txt" ] || fail "$key: no public key object stored beside the private key"

    # CKA_PRIVATE: without login the private key is not even visible.
    block "$WORK/list-nologin.out" "Private Key Object" "$key" >"$WORK/$key.nologin.txt"
    [ ! -s "$WORK/$key.nologin.txt" ] || fail "$key: private key visible without login (CKA_PRIVATE false)"

    # CKA_ID = SHA-1 over the subjectPublicKey BIT STRING contents.
    spki_of_csr "$WORK/$key.csr" "$WORK/$key.csrpub.pem"
    run_ok "spki-der-$key" plain_ossl pkey -pubin -in "$WORK/$key.csrpub.pem" -outform DER \
        -out "$WORK/$key.spki.der"
    run_ok "spki-asn1-$key" plain_ossl asn1parse -inform DER -in "$WORK/$key.spki.der"
    read -r off hl len < <(sed -n 's/^ *\([0-9]*\):d=1 *hl= *\([0-9]*\) *l= *\([0-9]*\) *prim: BIT STRING.*/\1 \2 \3/p' \
        "$WORK/spki-asn1-$key.out")
    [ -n "${len:-}" ] || fail "$key: no BIT STRING in the SubjectPublicKeyInfo"
    want_id=$(tail -c +$((off + hl + 2)) "$WORK/$key.spki.der" | head -c $((len - 1)) |
        plain_ossl dgst -sha1 -r | cut -d' ' -f1)
    got_id=$(sed -n 's/^ *ID: *\([0-9a-fA-F]*\)$/\1/p' "$WORK/$key.priv.txt" | head -n1 | tr 'A-F' 'a-f')
    assert_eq "$got_id" "$want_id" "$key: CKA_ID (SHA-1 of the public key)"
    pub_id=$(sed -n 's/^ *ID: *\([0-9a-fA-F]*\)$/\1/p' "$WORK/$key.pub.txt" | head -n1 | tr 'A-F' 'a-f')
    assert_eq "$pub_id" "$want_id" "$key: public key object's CKA_ID"
    note "$key: sensitive, never extractable, id $got_id"
done

# CKA_DECRYPT: RSA keys decrypt (TLS 1.2 RSA key exchange, CMS); EC keys have
# no use for it and must not say they do (checked last, after everything else).
assert_grep "$WORK/rsa-key.priv.txt" '^ *Usage:.*decrypt' "rsa-key: RSA key cannot decrypt (CKA_DECRYPT false)"
assert_no_grep "$WORK/ec-key.priv.txt" '^ *Usage:.*decrypt' "ec-key: EC key has CKA_DECRYPT true"
