#!/usr/bin/env bash
# tpm_renew.sh: `renew --tpm`, `import-cert --tpm` and `show --tpm` on an swtpm.
# - A new key, of the certificate's key type (EC P-256, RSA 2048) or
#   --key-type, goes to --key-out (a TSS2 PRIVATE KEY file, mode 0600); the
#   CSR is signed by it and carries the certificate's subject, SANs and
#   usage; the current key file is not touched. The certificate the CA issues
#   for the new key serves with the new key file (s_server, s_client).
# - import-cert --tpm: the certificate for the new key hands over (the new
#   key file and certificate, with --chain, in place; the old pair kept as
#   .old) and serves; run again it changes nothing; after an interruption it
#   finishes without overwriting the .old copies; a certificate for neither
#   key is refused.
# - --same-key: the CSR is signed by the current key (a file or its
#   tpmkey:handle=); a key that is not the certificate's is refused.
# - show --tpm: type, place, password and public key hash of a key file or
#   handle; with --cert, the certificate and whether it certifies the key
#   (text and JSON).
# - Refused without writing anything: an existing --key-out or --out without
#   --force (exit 1), bad option combinations (exit 2), a token key.
# - Nothing stays loaded in the TPM (bare swtpm, no resource manager).
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/tpm.sh"

setup_tpm_test_on_swtpm

# field FILE KIND WHAT: a CSR's or certificate's subject, SANs or extended key usage.
field() {
    local file=$1 kind=$2 what=$3
    case $what in
    subject) plain_ossl "$kind" -in "$file" -noout -subject -nameopt RFC2253 | sed 's/^subject=//' ;;
    san) plain_ossl "$kind" -in "$file" -noout -text | grep -A1 'Subject Alternative Name' | tail -n1 ;;
    eku) plain_ossl "$kind" -in "$file" -noout -text | grep -A1 'Extended Key Usage' | tail -n1 ;;
    esac
}

# same_request NAME CSR CERT: the CSR asks for what the certificate says.
same_request() {
    local name=$1 csr=$2 cert=$3 w
    run_ok "verify-$name" plain_ossl req -in "$csr" -verify -noout
    assert_grep "$WORK/verify-$name.err" 'verify OK' "$name: CSR signature"
    for w in subject san eku; do
        assert_eq "$(field "$csr" req "$w" | tr -d ' ')" "$(field "$cert" x509 "$w" | tr -d ' ')" \
            "$name: $w of the CSR vs the certificate"
    done
}

for type in ec:P-256 rsa:2048; do
    name=cur-${type/:/-}
    tpm_enroll "$name" "$type" server
    ca_sign "$WORK/$name.csr" "$WORK/$name.pem"
    cp "$WORK/$name.key.pem" "$WORK/$name.key.orig"

    run_ok "renew-$name" mks renew --tpm --cert "$WORK/$name.pem" --out "$WORK/$name-next.csr" \
        --key-out "$WORK/$name-next.key.pem"
    assert_grep "$WORK/renew-$name.out" "^pending: +TPM key in .*$name-next.key.pem, $type" \
        "$name: renew did not print the new key"
    assert_eq "$(file_mode "$WORK/$name-next.key.pem")" 600 "$name: new key file mode"
    assert_eq "$(head -n1 "$WORK/$name-next.key.pem")" "-----BEGIN TSS2 PRIVATE KEY-----" \
        "$name: new key file"
    assert_same_file "$WORK/$name.key.pem" "$WORK/$name.key.orig" "$name: the current key file"
    same_request "$name" "$WORK/$name-next.csr" "$WORK/$name.pem"
    spki_of_csr "$WORK/$name-next.csr" "$WORK/$name-next.csr.pub"
    pubkey_via "pub-next-$name" "$WORK/$name-next.key.pem" "$WORK/$name-next.pub"
    assert_same_file "$WORK/$name-next.csr.pub" "$WORK/$name-next.pub" "$name: CSR key vs new key"
    pubkey_via "pub-cur-$name" "$WORK/$name.key.pem" "$WORK/$name.pub"
    cmp -s "$WORK/$name.pub" "$WORK/$name-next.pub" && fail "$name: the new key is the old one"
    tpm_assert_no_transient "$SWTPM_TCTI" "$name"
done

# The new key serves with the certificate issued for it (the client's key is
# in the TPM too).
ca_sign "$WORK/cur-ec-P-256-next.csr" "$WORK/next.pem"
tpm_enroll cli ec:P-256 client
ca_sign "$WORK/cli.csr" "$WORK/cli.pem"
tls_handshake renewed 1_3 "$WORK/next.pem" "$WORK/cur-ec-P-256-next.key.pem" "$WORK/cli.pem" \
    "$WORK/cli.key.pem"

# import-cert --tpm: the hand-over, in the files a server reads. A
# certificate for neither key is refused and changes nothing.
D=$WORK/deploy
mkdir -p "$D"
install -m 600 "$WORK/cur-ec-P-256.key.pem" "$D/key.pem"
install -m 644 "$WORK/cur-ec-P-256.pem" "$D/cert.pem"
install -m 600 "$WORK/cur-ec-P-256-next.key.pem" "$D/next.key.pem"
run_rc import-neither 1 mks import-cert --tpm --key-ref "$D/key.pem" --next "$D/next.key.pem" \
    --cert-out "$D/cert.pem" "$WORK/cur-rsa-2048.pem"
assert_grep "$WORK/import-neither.err" 'certifies neither' "import-cert --tpm: a certificate for neither key"
assert_same_file "$D/key.pem" "$WORK/cur-ec-P-256.key.pem" "import-neither: the key file"
assert_same_file "$D/cert.pem" "$WORK/cur-ec-P-256.pem" "import-neither: the certificate file"
# A certificate the CA issued without the CSR's extensions (no
# -copy_extensions): the hand-over happens, with a warning naming the SANs
# and usage of the previous certificate (--cert-out) that it lacks.
B=$WORK/bare
mkdir -p "$B"
install -m 600 "$D/key.pem" "$D/next.key.pem" "$B/"
install -m 644 "$D/cert.pem" "$B/cert.pem"
run_ok sign-bare plain_ossl x509 -req -in "$WORK/cur-ec-P-256-next.csr" -CA "$MTLSKS_FIXTURE/ca.pem" \
    -CAkey "$MTLSKS_FIXTURE/ca.key" -set_serial 0x5eed11 -days 2 -out "$WORK/next-bare.pem"
run_ok import-bare mks import-cert --tpm --key-ref "$B/key.pem" --next "$B/next.key.pem" \
    --cert-out "$B/cert.pem" "$WORK/next-bare.pem"
assert_grep "$WORK/import-bare.err" "warning: .*next-bare.pem lacks what the key.s CSR asked for \(DNS:.*serverAuth.*-copy_extensions copy" \
    "import-cert --tpm: a certificate without the CSR's extensions drew no warning"
run_ok import-tpm mks import-cert --tpm --key-ref "$D/key.pem" --next "$D/next.key.pem" \
    --cert-out "$D/cert.pem" --chain "$MTLSKS_FIXTURE/ca.pem" "$WORK/next.pem"
assert_no_grep "$WORK/import-tpm.err" 'lacks' "import-cert --tpm: a certificate with the CSR's extensions drew a warning"
assert_same_file "$D/key.pem" "$WORK/cur-ec-P-256-next.key.pem" "hand-over: the new key in place"
assert_no_file "$D/next.key.pem" "hand-over: the pending key file"
assert_eq "$(file_mode "$D/key.pem")" 600 "hand-over: key file mode"
assert_same_file "$D/key.pem.old" "$WORK/cur-ec-P-256.key.pem" "hand-over: the old key kept"
assert_same_file "$D/cert.pem.old" "$WORK/cur-ec-P-256.pem" "hand-over: the old certificate kept"
plain_ossl x509 -in "$WORK/next.pem" -outform DER -out "$WORK/next.der"
plain_ossl x509 -in "$D/cert.pem" -outform DER -out "$WORK/deployed.der"
assert_same_file "$WORK/deployed.der" "$WORK/next.der" "hand-over: the new certificate first"
assert_eq "$(grep -c 'BEGIN CERTIFICATE' "$D/cert.pem")" 2 "hand-over: the certificate and its chain"
tls_handshake handover 1_3 "$D/cert.pem" "$D/key.pem" "$WORK/cli.pem" "$WORK/cli.key.pem"
# Run again: nothing left to hand over, and the .old copies stay the old pair.
run_ok import-again mks import-cert --tpm --key-ref "$D/key.pem" --next "$D/next.key.pem" \
    --cert-out "$D/cert.pem" "$WORK/next.pem"
assert_grep "$WORK/import-again.out" 'unchanged' "import-cert --tpm again: the key stays"
assert_same_file "$D/key.pem.old" "$WORK/cur-ec-P-256.key.pem" "import again: the old key copy"
assert_same_file "$D/cert.pem.old" "$WORK/cur-ec-P-256.pem" "import again: the old certificate copy"
# Interrupted after the certificate file was written: the next run finishes
# and keeps the old certificate copy (not the new certificate) as .old.
I=$WORK/interrupted
mkdir -p "$I"
install -m 600 "$WORK/cur-rsa-2048.key.pem" "$I/key.pem"
install -m 644 "$WORK/cur-rsa-2048.pem" "$I/cert.pem.old"
install -m 600 "$WORK/cur-rsa-2048-next.key.pem" "$I/next.key.pem"
ca_sign "$WORK/cur-rsa-2048-next.csr" "$WORK/rsa-next.pem"
install -m 644 "$WORK/rsa-next.pem" "$I/cert.pem"
run_ok import-resume mks import-cert --tpm --key-ref "$I/key.pem" --next "$I/next.key.pem" \
    --cert-out "$I/cert.pem" "$WORK/rsa-next.pem"
assert_same_file "$I/key.pem" "$WORK/cur-rsa-2048-next.key.pem" "resumed hand-over: the new key"
assert_same_file "$I/cert.pem.old" "$WORK/cur-rsa-2048.pem" "resumed hand-over: the old certificate copy"
run_rc import-usage-label 2 mks import-cert --tpm --label web --key-ref "$D/key.pem" \
    --cert-out "$D/cert.pem" "$WORK/next.pem"
run_rc import-usage-out 2 mks import-cert --tpm --key-ref "$D/key.pem" "$WORK/next.pem"
run_rc import-usage-next 2 mks import-cert --label web --next "$D/key.pem" "$WORK/next.pem"

# --key-type overrides the certificate's type.
run_ok renew-type mks renew --tpm --cert "$WORK/cur-ec-P-256.pem" --key-type ec:P-384 \
    --out "$WORK/p384.csr" --key-out "$WORK/p384.key.pem"
run_ok p384-text plain_ossl req -in "$WORK/p384.csr" -noout -text
assert_grep "$WORK/p384-text.out" 'ASN1 OID: secp384r1' "--key-type ec:P-384"

# --same-key: signed by the current key, by file and by persistent handle.
run_ok renew-same mks renew --tpm --cert "$WORK/cur-ec-P-256.pem" --same-key \
    --key "$WORK/cur-ec-P-256.key.pem" --out "$WORK/same.csr"
assert_grep "$WORK/renew-same.out" '^key: +.*cur-ec-P-256.key.pem \(same key\)' "--same-key output"
same_request same "$WORK/same.csr" "$WORK/cur-ec-P-256.pem"
spki_of_csr "$WORK/same.csr" "$WORK/same.csr.pub"
assert_same_file "$WORK/same.csr.pub" "$WORK/cur-ec-P-256.pub" "--same-key: CSR key vs current key"
tpm_enroll pers ec:P-256 client --persist 0x81000051
ca_sign "$WORK/pers.csr" "$WORK/pers.pem"
run_ok renew-handle mks renew --tpm --cert "$WORK/pers.pem" --same-key \
    --key tpmkey:handle=0x81000051 --out "$WORK/pers-same.csr"
same_request pers-same "$WORK/pers-same.csr" "$WORK/pers.pem"

# show --tpm: the key (type, where, password, public key hash) and, with
# --cert, the certificate and whether it certifies the key.
pub_sha256() { plain_ossl pkey -pubin -in "$1" -outform DER | sha256sum | cut -d' ' -f1; }
run_ok show mks show --tpm --key "$WORK/cur-ec-P-256.key.pem" --cert "$WORK/cur-ec-P-256.pem"
assert_grep "$WORK/show.out" '^  private key +ec P-256, only in its key file$' "show: key type and place"
assert_grep "$WORK/show.out" '^    password +none' "show: no password"
assert_grep "$WORK/show.out" "^    pub sha256 +$(pub_sha256 "$WORK/cur-ec-P-256.pub")\$" "show: public key hash"
assert_grep "$WORK/show.out" '^  certificate +.*CN ?= ?cur-ec-P-256' "show: the certificate"
assert_grep "$WORK/show.out" '^    key +this key$' "show: the certificate certifies the key"
run_ok show-other mks show --tpm --key "$WORK/cur-ec-P-256.key.pem" --cert "$WORK/cur-rsa-2048.pem"
assert_grep "$WORK/show-other.out" '^    key +ANOTHER KEY' "show: a certificate of another key"
run_ok show-json mks show --tpm --key "$WORK/cur-rsa-2048.key.pem" --cert "$WORK/cur-rsa-2048.pem" \
    --json
run_ok show-json-parse python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert d["key_type"] == "rsa" and d["bits"] == 2048 and d["curve"] is None, d
assert d["persistent"] is None and d["password"] is False, d
assert d["public_key_sha256"] == sys.argv[2], d
assert d["certificate"]["certifies_key"] is True, d
assert "cur-rsa-2048" in d["certificate"]["subject"], d
' "$WORK/show-json.out" "$(pub_sha256 "$WORK/cur-rsa-2048.pub")"
run_ok show-handle mks show --tpm --key tpmkey:handle=0x81000051
assert_grep "$WORK/show-handle.out" 'ec P-256, persistent \(tpmkey:handle=0x81000051\)' "show: a handle"
run_rc show-no-key 2 mks show --tpm --cert "$WORK/pers.pem"
run_rc show-token-key 2 mks show --tpm --key 'pkcs11:token=x;object=y;type=private'
run_rc show-label 2 mks show --tpm --label web --key tpmkey:handle=0x81000051

# Refusals, and nothing written by them.
run_rc wrong-key 1 mks renew --tpm --cert "$WORK/cur-rsa-2048.pem" --same-key \
    --key "$WORK/cur-ec-P-256.key.pem" --out "$WORK/wrong.csr"
assert_grep "$WORK/wrong-key.err" 'is not the key of .*cur-rsa-2048.pem' "a key that is not the certificate's"
[ ! -e "$WORK/wrong.csr" ] || fail "wrong-key: a CSR was written"
run_rc exists 1 mks renew --tpm --cert "$WORK/cur-ec-P-256.pem" --out "$WORK/new.csr" \
    --key-out "$WORK/cur-ec-P-256.key.pem"
assert_grep "$WORK/exists.err" 'exists' "an existing --key-out"
assert_same_file "$WORK/cur-ec-P-256.key.pem" "$WORK/cur-ec-P-256.key.orig" "exists: the key file"
[ ! -e "$WORK/new.csr" ] || fail "exists: a CSR was written"
run_rc no-cert 2 mks renew --tpm --out "$WORK/x.csr" --key-out "$WORK/x.key.pem"
assert_grep "$WORK/no-cert.err" 'needs --cert' "--tpm without --cert"
run_rc no-key-out 2 mks renew --tpm --cert "$WORK/cur-ec-P-256.pem" --out "$WORK/x.csr"
assert_grep "$WORK/no-key-out.err" '--key-out' "--tpm without --key-out"
run_rc same-key-out 2 mks renew --tpm --cert "$WORK/cur-ec-P-256.pem" --same-key \
    --key "$WORK/cur-ec-P-256.key.pem" --key-out "$WORK/x.key.pem" --out "$WORK/x.csr"
run_rc label-tpm 2 mks renew --tpm --label web --cert "$WORK/cur-ec-P-256.pem" \
    --out "$WORK/x.csr" --key-out "$WORK/x.key.pem"
run_rc cert-no-tpm 2 mks renew --label web --cert "$WORK/cur-ec-P-256.pem" --out "$WORK/x.csr"
run_rc bad-type 2 mks renew --tpm --cert "$WORK/cur-ec-P-256.pem" --key-type rsa:4096 \
    --out "$WORK/x.csr" --key-out "$WORK/x.key.pem"
for f in x.csr x.key.pem; do
    [ ! -e "$WORK/$f" ] || fail "a refused renew wrote $f"
done
tpm_assert_no_transient "$SWTPM_TCTI" "after renew"
note "renew --tpm: new EC and RSA keys, --key-type, --same-key by file and handle; show --tpm; refusals write nothing"
