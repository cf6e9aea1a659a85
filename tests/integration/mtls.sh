#!/usr/bin/env bash
# mtls.sh ec|rsa
#
# Mutual TLS between `openssl s_server -Verify 1 -verify_return_error` and
# `openssl s_client`, both private keys in the token, both loaded through our
# provider from openssl.cnf: TLS 1.3 and TLS 1.2, keys given as pkcs11: URIs,
# as key-reference files, and one of each; the server's certificate also
# loaded from the token. RSA also with PKCS#1 v1.5 signatures (TLS 1.2) next
# to RSA-PSS. Each exchange checks that both programs exit 0 (SoftHSM must not
# crash at exit), the protocol, the peer signature type, that the client
# verified the server, and that the server saw the client's certificate.
. "$(dirname "$0")/../lib/common.sh"

KIND=${1:?usage: mtls.sh ec|rsa}
case $KIND in
ec) KEY_TYPE=ec:P-256 SIG13=ECDSA SIG12=ECDSA ;;
rsa) KEY_TYPE=rsa:2048 SIG13=RSA-PSS SIG12='RSA(-PSS)?' ;;
*) fail "unknown kind $KIND" ;;
esac

setup_test
new_token mtls-a

enroll srv "$KEY_TYPE" server
SRV_URI=$ENROLL_URI
enroll cli "$KEY_TYPE" client
CLI_URI=$ENROLL_URI
ca_sign "$WORK/srv.csr" "$WORK/srv.pem"
ca_sign "$WORK/cli.csr" "$WORK/cli.pem"
run_ok import-srv mks import-cert --label srv "$WORK/srv.pem"
run_ok import-cli mks import-cert --label cli "$WORK/cli.pem"

SRV_REF=$WORK/srv.key.pem
CLI_REF=$WORK/cli.key.pem
n=0
for ver in 1_3 1_2; do
    sig=$SIG13
    [ "$ver" = 1_2 ] && sig=$SIG12
    for form in uri keyref mixed; do
        case $form in
        uri) skey=$SRV_URI ckey=$CLI_URI ;;
        keyref) skey=$SRV_REF ckey=$CLI_REF ;;
        mixed) skey=$SRV_REF ckey=$CLI_URI ;;
        esac
        step="$KIND-tls$ver-$form"
        tls_handshake "$step" "$ver" "$WORK/srv.pem" "$skey" "$WORK/cli.pem" "$ckey"
        assert_grep "$WORK/$step.client.log" "^Peer signature type: $sig\$" \
            "$step: the server did not sign with $sig"
        n=$((n + 1))
    done
done

# The server's certificate from the token too (pkcs11:...;type=cert).
step="$KIND-tls1_3-token-cert"
tls_handshake "$step" 1_3 "$(cert_uri srv)" "$SRV_URI" "$WORK/cli.pem" "$CLI_REF"
n=$((n + 1))

if [ "$KIND" = rsa ]; then
    # RSA PKCS#1 v1.5 signatures on both sides (TLS 1.2 only; 1.3 forbids them).
    step=rsa-tls1_2-pkcs1
    TLS_CLIENT_ARGS=(-sigalgs RSA+SHA256 -client_sigalgs RSA+SHA256)
    tls_handshake "$step" 1_2 "$WORK/srv.pem" "$SRV_REF" "$WORK/cli.pem" "$CLI_REF" \
        -sigalgs RSA+SHA256 -client_sigalgs RSA+SHA256
    TLS_CLIENT_ARGS=()
    assert_grep "$WORK/$step.client.log" '^Peer signature type: RSA$' \
        "$step: the server did not sign with RSA PKCS#1 v1.5"
    n=$((n + 1))
fi
note "$n mutual-TLS handshakes with $KEY_TYPE keys in the token: ok"
