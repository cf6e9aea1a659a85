#!/usr/bin/env bash
# enroll.sh KEY_TYPE (ec:P-256 | ec:P-384 | rsa:2048)
#
# `mtls-keystore enroll` makes a key pair in the token and writes a CSR and a
# key reference. Checked here:
# - the CLI exits 0 and prints the key's pkcs11: URI;
# - the CSR's self-signature verifies;
# - the CSR carries the token's public key: the same SubjectPublicKeyInfo as
#   pkcs11-tool reads from the token, and as our provider exports from the URI;
# - EC: the key has a named curve (no explicit parameters), and the ECDSA
#   signature AlgorithmIdentifier has no NULL parameter;
# - the requested SANs, keyUsage and extendedKeyUsage are in the CSR;
# - the key reference is mode 0600, is a "PKCS#11 PROVIDER URI" PEM and holds
#   the printed URI.
. "$(dirname "$0")/../lib/common.sh"

KEY_TYPE=${1:?usage: enroll.sh KEY_TYPE}
setup_test
require_cmd pkcs11-tool
new_token mtls-a

NAME=web
# Both usages, and the SAN kinds the CLI accepts.
run_ok enroll mks enroll --token "$TOKEN_LABEL" --label "$NAME" --key-type "$KEY_TYPE" \
    --subject "CN=web.example.test,O=Example Org" \
    --san DNS:web.example.test --san DNS:localhost --san IP:127.0.0.1 \
    --san URI:spiffe://example.test/web --san email:ops@example.test \
    --usage both --out "$WORK/web.csr" --key-ref "$WORK/web.key.pem"
URI=$(grep -Eo 'pkcs11:[^[:space:]"]+' "$WORK/enroll.out" | head -n1 || true)
[ -n "$URI" ] || fail "enroll printed no pkcs11: URI on stdout: $(cat "$WORK/enroll.out")"
note "enroll printed $URI"
case $URI in
*"token=$TOKEN_LABEL"*) ;;
*) fail "printed URI does not name the token $TOKEN_LABEL: $URI" ;;
esac
case $URI in
*type=private*) ;;
*) fail "printed URI does not say type=private: $URI" ;;
esac

# --- the CSR ----------------------------------------------------------------
assert_file "$WORK/web.csr" "CSR"
assert_grep "$WORK/web.csr" '^-----BEGIN CERTIFICATE REQUEST-----$' "CSR is not PEM"
run_ok csr-verify plain_ossl req -in "$WORK/web.csr" -verify -noout
assert_grep "$WORK/csr-verify.err" 'verify OK' "CSR self-signature does not verify"
run_ok csr-text plain_ossl req -in "$WORK/web.csr" -noout -text
T=$WORK/csr-text.out

assert_grep "$T" 'Subject: .*CN ?= ?web\.example\.test' "CSR subject lacks CN=web.example.test"
assert_grep "$T" 'Subject: .*O ?= ?Example Org' "CSR subject lacks O=Example Org"

# Same public key as in the token: pkcs11-tool's view and our provider's view.
spki_of_csr "$WORK/web.csr" "$WORK/csr.pub.pem"
spki_from_token "$NAME" "$WORK/token.pub.pem"
assert_same_file "$WORK/csr.pub.pem" "$WORK/token.pub.pem" \
    "CSR public key is not the token's public key (pkcs11-tool --read-object)"
run_ok provider-pubout ossl pkey -in "$URI" -pubout -out "$WORK/provider.pub.pem"
assert_same_file "$WORK/csr.pub.pem" "$WORK/provider.pub.pem" \
    "CSR public key is not what the provider exports for $URI"

case $KEY_TYPE in
ec:P-256 | ec:P-384)
    if [ "$KEY_TYPE" = ec:P-256 ]; then
        oid=prime256v1 nist=P-256
    else
        oid=secp384r1 nist=P-384
    fi
    assert_grep "$T" 'Public Key Algorithm: id-ecPublicKey' "CSR key is not EC"
    assert_grep "$T" "ASN1 OID: $oid" "EC CSR does not name the curve $oid"
    assert_grep "$T" "NIST CURVE: $nist" "EC CSR does not name NIST curve $nist"
    assert_no_grep "$T" 'Field Type' "EC CSR has explicit curve parameters"
    assert_grep "$T" 'Signature Algorithm: ecdsa-with-SHA(256|384|512)' "EC CSR not signed with ECDSA"
    # ECDSA AlgorithmIdentifiers carry no parameters (RFC 5758), not even NULL.
    run_ok csr-asn1 plain_ossl asn1parse -in "$WORK/web.csr"
    if grep -A1 'OBJECT *:ecdsa-with-SHA' "$WORK/csr-asn1.out" | grep -q 'prim: NULL'; then
        fail "ECDSA signature AlgorithmIdentifier carries a NULL parameter"
    fi
    ;;
rsa:*)
    bits=${KEY_TYPE#rsa:}
    assert_grep "$T" 'Public Key Algorithm: rsaEncryption' "CSR key is not RSA"
    assert_grep "$T" "Public-Key: \($bits bit\)" "RSA key is not $bits bits"
    assert_grep "$T" 'Signature Algorithm: (sha256|sha384|sha512)WithRSAEncryption|rsassaPss' \
        "RSA CSR signature algorithm"
    ;;
*) fail "unknown key type $KEY_TYPE" ;;
esac

# Requested extensions.
assert_grep "$T" 'Requested Extensions' "CSR requests no extensions"
assert_grep "$T" 'X509v3 Subject Alternative Name' "CSR has no subjectAltName"
assert_grep "$T" 'DNS:web\.example\.test' "CSR lacks SAN DNS:web.example.test"
assert_grep "$T" 'DNS:localhost' "CSR lacks SAN DNS:localhost"
assert_grep "$T" 'IP Address:127\.0\.0\.1' "CSR lacks SAN IP:127.0.0.1"
assert_grep "$T" 'URI:spiffe://example\.test/web' "CSR lacks SAN URI:spiffe://example.test/web"
assert_grep "$T" 'email:ops@example\.test' "CSR lacks SAN email:ops@example.test"
assert_grep "$T" 'X509v3 Key Usage' "CSR has no keyUsage"
assert_grep "$T" 'Digital Signature' "keyUsage lacks digitalSignature"
assert_grep "$T" 'X509v3 Extended Key Usage' "CSR has no extendedKeyUsage"
assert_grep "$T" 'TLS Web Client Authentication' "--usage both: EKU lacks clientAuth"
assert_grep "$T" 'TLS Web Server Authentication' "--usage both: EKU lacks serverAuth"

# --- the key reference ------------------------------------------------------
assert_file "$WORK/web.key.pem" "key reference"
assert_eq "$(file_mode "$WORK/web.key.pem")" 600 "key reference file mode"
assert_grep "$WORK/web.key.pem" '^-----BEGIN PKCS#11 PROVIDER URI-----$' \
    "key reference is not a 'PKCS#11 PROVIDER URI' PEM"
run_ok keyref-asn1 plain_ossl asn1parse -in "$WORK/web.key.pem"
assert_grep "$WORK/keyref-asn1.out" 'VISIBLESTRING +:PKCS#11 Provider URI v1\.0$' \
    "key reference lacks the description string"
KEYREF_URI=$(sed -n 's/.*UTF8STRING *://p' "$WORK/keyref-asn1.out")
assert_eq "$KEYREF_URI" "$URI" "URI in the key reference vs the URI enroll printed"
assert_no_grep "$WORK/web.key.pem" 'PRIVATE KEY' "key reference holds a private key"

# The key reference names the same key as the URI.
run_ok keyref-pubout ossl pkey -in "$WORK/web.key.pem" -pubout -out "$WORK/keyref.pub.pem"
assert_same_file "$WORK/csr.pub.pem" "$WORK/keyref.pub.pem" \
    "public key loaded through the key reference is not the CSR's"

note "enroll $KEY_TYPE: ok"
