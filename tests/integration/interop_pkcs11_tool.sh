#!/usr/bin/env bash
# Keys that another tool made (pkcs11-tool --keypairgen, EC and RSA) work
# through our provider: `openssl req` signs a CSR with them, and they serve
# mutual-TLS handshakes (TLS 1.3 and 1.2) as the server's key, with a client
# key that `mtls-keystore enroll` made.
. "$(dirname "$0")/../lib/common.sh"

setup_test
require_cmd pkcs11-tool
new_token mtls-a

enroll cli ec:P-256 client
ca_sign "$WORK/cli.csr" "$WORK/cli.pem"

for kt in EC:prime256v1 rsa:2048; do
    case $kt in
    EC:*) name=tool-ec id=42 ;;
    rsa:*) name=tool-rsa id=43 ;;
    esac
    run_ok "keypairgen-$name" p11tool_ --token-label "$TOKEN_LABEL" --login --pin "$TEST_PIN" \
        --keypairgen --key-type "$kt" --label "$name" --id "$id"
    uri=$(key_uri "$name")

    # A CSR signed through the provider with the pkcs11-tool key.
    run_ok "req-$name" ossl req -new -key "$uri" -subj "/CN=$name/O=mtls-keystore tests" \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        -addext "keyUsage=critical,digitalSignature" -addext "extendedKeyUsage=serverAuth" \
        -out "$WORK/$name.csr"
    run_ok "req-verify-$name" plain_ossl req -in "$WORK/$name.csr" -verify -noout
    spki_of_csr "$WORK/$name.csr" "$WORK/$name.csr.pub.pem"
    spki_from_token "$name" "$WORK/$name.token.pub.pem"
    assert_same_file "$WORK/$name.token.pub.pem" "$WORK/$name.csr.pub.pem" \
        "$name: CSR made through the provider carries another key"
    ca_sign "$WORK/$name.csr" "$WORK/$name.pem"

    for ver in 1_3 1_2; do
        tls_handshake "$name-tls$ver" "$ver" "$WORK/$name.pem" "$uri" "$WORK/cli.pem" "$WORK/cli.key.pem"
    done
done
