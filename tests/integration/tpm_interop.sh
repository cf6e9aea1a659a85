#!/usr/bin/env bash
# tpm_interop.sh: TPM key files are interchangeable with Debian's tpm2-openssl
# (provider tpm2.so, TCTI from TPM2OPENSSL_TCTI), both ways, EC and RSA.
# - Keys that `openssl genpkey -provider tpm2` made: our provider decodes the
#   TSS2 PRIVATE KEY file to the same public key tpm2-openssl reports, the CLI
#   makes a CSR with it (`csr --key FILE`), and `openssl s_server` serves a
#   mutual-TLS handshake with it through our provider.
# - Key files `enroll --tpm` wrote: tpm2-openssl loads them with the same
#   public key as ours, and signs with them (pkeyutl; tpm2-openssl 1.1.1's
#   `dgst -sign` fails with "missing private key" even for its own keys,
#   tpm2-openssl#81) so that the signature verifies in software.
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/tpm.sh"

setup_tpm_test
require_tpm2_tools
require_tpm2_openssl
start_swtpm a
use_tpm "$SWTPM_TCTI"
P2=(-provider tpm2 -provider default)

tpm_enroll cli ec:P-256 client
ca_sign "$WORK/cli.csr" "$WORK/cli.pem"
echo "sign me" >"$WORK/data"
run_ok digest plain_ossl dgst -sha256 -binary -out "$WORK/data.sha256" "$WORK/data"

for kind in ec rsa; do
    case $kind in
    ec) gen=(-algorithm EC -pkeyopt group:P-256) ours_type=ec:P-256 sig=ECDSA ;;
    rsa) gen=(-algorithm RSA -pkeyopt bits:2048) ours_type=rsa:2048 sig=RSA-PSS ;;
    esac

    # tpm2-openssl's key, through ours.
    t2=$WORK/t2-$kind.key.pem
    run_ok "t2-genpkey-$kind" tpm2_ossl genpkey "${P2[@]}" -propquery '?provider=tpm2' "${gen[@]}" \
        -out "$t2"
    assert_eq "$(head -n1 "$t2")" "-----BEGIN TSS2 PRIVATE KEY-----" "tpm2-openssl $kind key file"
    pubkey_via "t2-pub-ours-$kind" "$t2" "$WORK/t2-$kind.ours.pub"
    run_ok "t2-pub-tpm2-$kind" tpm2_ossl pkey "${P2[@]}" -in "$t2" -pubout -out "$WORK/t2-$kind.tpm2.pub"
    assert_same_file "$WORK/t2-$kind.ours.pub" "$WORK/t2-$kind.tpm2.pub" \
        "tpm2-openssl $kind key: public key through ours vs tpm2-openssl"
    run_ok "t2-csr-$kind" mks csr --key "$t2" --subject "CN=t2-$kind,O=mtls-keystore tests" \
        --san DNS:localhost --san IP:127.0.0.1 --usage server --out "$WORK/t2-$kind.csr"
    spki_of_csr "$WORK/t2-$kind.csr" "$WORK/t2-$kind.csr.pub"
    assert_same_file "$WORK/t2-$kind.csr.pub" "$WORK/t2-$kind.tpm2.pub" "tpm2-openssl $kind key: CSR"
    ca_sign "$WORK/t2-$kind.csr" "$WORK/t2-$kind.pem"
    for ver in 1_3 1_2; do
        step=t2-$kind-server-tls$ver
        tls_handshake "$step" "$ver" "$WORK/t2-$kind.pem" "$t2" "$WORK/cli.pem" "$WORK/cli.key.pem"
        [ "$ver" = 1_3 ] && assert_grep "$WORK/$step.client.log" "^Peer signature type: $sig\$" \
            "$step: the server did not sign with $sig"
    done

    # Our key file, through tpm2-openssl.
    tpm_enroll "ours-$kind" "$ours_type" both
    ours=$WORK/ours-$kind.key.pem
    pubkey_via "ours-pub-ours-$kind" "$ours" "$WORK/ours-$kind.ours.pub"
    run_ok "ours-pub-tpm2-$kind" tpm2_ossl pkey "${P2[@]}" -in "$ours" -pubout \
        -out "$WORK/ours-$kind.tpm2.pub"
    assert_same_file "$WORK/ours-$kind.ours.pub" "$WORK/ours-$kind.tpm2.pub" \
        "our $kind key: public key through ours vs tpm2-openssl"
    spki_of_csr "$WORK/ours-$kind.csr" "$WORK/ours-$kind.csr.pub"
    assert_same_file "$WORK/ours-$kind.csr.pub" "$WORK/ours-$kind.tpm2.pub" "our $kind key: CSR"
    pkeyopt=()
    [ "$kind" = rsa ] && pkeyopt=(-pkeyopt digest:sha256)
    run_ok "ours-sign-tpm2-$kind" tpm2_ossl pkeyutl "${P2[@]}" -propquery '?provider=tpm2' -sign \
        -inkey "$ours" "${pkeyopt[@]}" \
        -in "$WORK/data.sha256" -out "$WORK/ours-$kind.sig"
    run_ok "ours-verify-$kind" plain_ossl dgst -sha256 -verify "$WORK/ours-$kind.tpm2.pub" \
        -signature "$WORK/ours-$kind.sig" "$WORK/data"
    assert_grep "$WORK/ours-verify-$kind.out" '^Verified OK$' "our $kind key signed by tpm2-openssl"
done

tpm_assert_no_transient "$SWTPM_TCTI" "after the interop tests"
note "TPM key files work both ways with tpm2-openssl: ok"
