#!/usr/bin/env bash
# A renewal interrupted anywhere loses nothing: at every point the key
# reference and certificate file on disk make a working server (what nginx
# reads when it reloads), and running import-cert again finishes the
# hand-over.
#
# 1. The intermediate states of a hand-over, made with other tools
#    (pkcs11-tool, GnuTLS's p11tool): the new certificate stored as NAME.next;
#    the new private key relabelled NAME but not its public key and
#    certificate; the whole new pair relabelled NAME with the old one still
#    NAME too.
# 2. When the fault-injecting PKCS#11 shim is built (tests/p11shim,
#    $MTLSKS_SHIM): import-cert itself interrupted at each token write of a
#    hand-over (C_CreateObject, every C_SetAttributeValue, C_DestroyObject of
#    the previous NAME.old), then run again.
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/lifecycle.sh"

setup_test
require_cmd pkcs11-tool python3
new_token mtls-a

enroll cli ec:P-256 client
ca_sign "$WORK/cli.csr" "$WORK/cli.pem"
run_ok import-cli mks import-cert --label cli "$WORK/cli.pem"

# serves STEP NAME: a handshake with the files a server of NAME reads.
serves() {
    tls_handshake "$1" 1_3 "$WORK/$2.crt" "$WORK/$2.key.pem" "$WORK/cli.pem" "$WORK/cli.key.pem"
}

# prepare NAME: key NAME with its certificate, key reference and certificate
# file, then `renew` and the CA's new certificate $WORK/NAME-new.pem. Sets
# NEW_ID (hex) to the pending key's id.
prepare() {
    local name=$1
    enroll "$name" ec:P-256 server
    ca_sign "$WORK/$name.csr" "$WORK/$name.pem"
    run_ok "import-$name" mks import-cert --label "$name" --key-ref "$WORK/$name.key.pem" \
        --cert-out "$WORK/$name.crt" "$WORK/$name.pem"
    run_ok "renew-$name" mks renew --label "$name" --out "$WORK/$name-new.csr"
    ca_sign "$WORK/$name-new.csr" "$WORK/$name-new.pem"
    run_ok "show-$name" mks show --label "$name" --json
    NEW_ID=$(json_eval "$WORK/show-$name.out" '[k["id"] for k in d["pending"]["keys"] if k["class"] == "private-key"][0]')
}

# finish NAME: import-cert again completes the hand-over; the new pair serves.
finish() {
    local name=$1
    run_ok "finish-$name" mks import-cert --label "$name" --key-ref "$WORK/$name.key.pem" \
        --cert-out "$WORK/$name.crt" "$WORK/$name-new.pem"
    assert_eq "$(count_label "$name" privkey)/$(count_label "$name.old" privkey)/$(count_label "$name.next")" \
        "1/1/0" "$name: private keys NAME/NAME.old, objects NAME.next after finishing"
    assert_eq "$(spki_hash "$WORK/$name.crt")" "$(spki_hash "$WORK/$name-new.csr")" \
        "$name: the certificate file after finishing"
    serves "$name-finished" "$name"
}

relabel() { # relabel URI NEW_LABEL (GnuTLS p11tool, not our code)
    run_ok "p11tool-$2-$RANDOM" env GNUTLS_PIN="$TEST_PIN" p11tool --provider "$SOFTHSM_MODULE" \
        --login --set-label="$2" "$1"
}

# --- 1. intermediate states made by other tools --------------------------------
if command -v p11tool >/dev/null 2>&1; then
    tok="pkcs11:token=$TOKEN_LABEL"
    for state in stored promoting promoted; do
        name=st-$state
        prepare "$name"
        plain_ossl x509 -in "$WORK/$name-new.pem" -outform DER -out "$WORK/$name-new.der"
        run_ok "write-$name" p11tool_ --token-label "$TOKEN_LABEL" --login --pin "$TEST_PIN" \
            --write-object "$WORK/$name-new.der" --type cert --id "$NEW_ID" --label "$name.next"
        id_uri=$(printf '%s' "$NEW_ID" | sed 's/../%&/g')
        case $state in
        promoting)
            relabel "$tok;id=$id_uri;object=$name.next;type=private" "$name"
            ;;
        promoted)
            for type in private public cert; do
                relabel "$tok;id=$id_uri;object=$name.next;type=$type" "$name"
            done
            ;;
        esac
        serves "$name-interrupted" "$name"
        finish "$name"
    done
else
    note "p11tool (gnutls-bin) missing: intermediate states not made by hand"
fi

# --- 2. import-cert interrupted by the fault-injecting shim ----------------------
SHIM=${MTLSKS_SHIM:-}
[ -n "$SHIM" ] || SHIM=$MTLSKS_BUILD/tests/p11shim/mtlsks-p11shim.so
if [ -r "$SHIM" ]; then
    # shim_import NAME FAULT: import-cert through the shim, failing as FAULT says.
    shim_import() {
        local name=$1 fault=$2
        run_rc "faulty-$name" 1 env MTLSKS_SHIM_MODULE="$SOFTHSM_MODULE" MTLSKS_SHIM_FAULTS="$fault" \
            OPENSSL_CONF="$TOKEN_CNF" "$MTLSKS_CLI" --module "$SHIM" import-cert --label "$name" \
            --key-ref "$WORK/$name.key.pem" --cert-out "$WORK/$name.crt" "$WORK/$name-new.pem"
        assert_grep "$WORK/faulty-$name.err" "${fault%%=*}.*CKR_DEVICE_ERROR" \
            "$name: import-cert did not stop at the injected fault"
    }
    n=0
    for fault in C_CreateObject=CKR_DEVICE_ERROR@1 C_SetAttributeValue=CKR_DEVICE_ERROR@1 \
        C_SetAttributeValue=CKR_DEVICE_ERROR@2 C_SetAttributeValue=CKR_DEVICE_ERROR@3 \
        C_SetAttributeValue=CKR_DEVICE_ERROR@4 C_SetAttributeValue=CKR_DEVICE_ERROR@5 \
        C_SetAttributeValue=CKR_DEVICE_ERROR@6; do
        n=$((n + 1))
        name=fault$n
        prepare "$name"
        shim_import "$name" "$fault"
        serves "$name-interrupted" "$name"
        finish "$name"
        note "$name: interrupted at $fault, served, finished"
    done
    # A second renewal: the previous NAME.old is destroyed first; interrupted there.
    name="fault-old"
    prepare "$name"
    finish "$name"
    run_ok "renew2-$name" mks renew --label "$name" --out "$WORK/$name-new.csr" --force
    ca_sign "$WORK/$name-new.csr" "$WORK/$name-new.pem"
    shim_import "$name" C_DestroyObject=CKR_DEVICE_ERROR@2
    serves "$name-interrupted" "$name"
    finish "$name"
    assert_eq "$(count_label "$name.old")" 3 "$name: objects labelled NAME.old after the second renewal"
else
    note "fault-injecting shim not built ($SHIM): import-cert not interrupted for real"
fi
note "interrupted renewals: ok"
