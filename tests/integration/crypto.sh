#!/usr/bin/env bash
# The provider's operations on token keys, one by one, checked against the
# default provider with the public key only:
# - ECDSA (P-256, P-384) with SHA-256/384/512;
# - RSA PKCS#1 v1.5 with SHA-256/384/512, RSA-PSS with salt = digest length
#   (what TLS 1.3 uses) and with the maximum salt;
# - RSA decryption, PKCS#1 v1.5 and OAEP (SHA-1; what SoftHSM supports);
# - the private half is never exported: writing the key out fails, and
#   printing it shows the public half and no private component.
. "$(dirname "$0")/../lib/common.sh"

setup_test
new_token mtls-a

enroll ec256 ec:P-256 client
enroll ec384 ec:P-384 client
enroll rsa rsa:2048 client
for k in ec256 ec384 rsa; do
    run_ok "pub-$k" ossl pkey -in "$(key_uri "$k")" -pubout -out "$WORK/$k.pub.pem"
done
head -c 1000 /dev/urandom >"$WORK/data"
n=0

# sig STEP KEY_NAME KEY_ARG DGST_ARGS...: sign through the provider (KEY_ARG:
# URI or key-reference file), verify in the default provider.
sig() {
    local step=$1 name=$2 key=$3
    shift 3
    run_ok "$step" ossl dgst "$@" -sign "$key" -out "$WORK/$step.sig" "$WORK/data"
    run_ok "$step-verify" plain_ossl dgst "$@" -verify "$WORK/$name.pub.pem" \
        -signature "$WORK/$step.sig" "$WORK/data"
    assert_grep "$WORK/$step-verify.out" '^Verified OK$' "$step: signature does not verify"
    n=$((n + 1))
}

for k in ec256 ec384; do
    for md in sha256 sha384 sha512; do
        sig "ecdsa-$k-$md" "$k" "$(key_uri "$k")" "-$md"
    done
    sig "ecdsa-$k-keyref" "$k" "$WORK/$k.key.pem" -sha256
done
for md in sha256 sha384 sha512; do
    sig "rsa-pkcs1-$md" rsa "$(key_uri rsa)" "-$md"
    sig "rsa-pss-$md" rsa "$(key_uri rsa)" "-$md" -sigopt rsa_padding_mode:pss \
        -sigopt rsa_pss_saltlen:digest
done
sig rsa-pss-maxsalt rsa "$WORK/rsa.key.pem" -sha256 -sigopt rsa_padding_mode:pss \
    -sigopt rsa_pss_saltlen:max

# The provider signs and verifies two ways: in pieces (DigestSign/Verify
# Update and Final: openssl dgst, pkeyutl -rawin) and in one EVP_DigestSign
# or EVP_DigestVerify call (libssl, and certificate requests: req -new signs,
# req -verify -key verifies with the token key). Each path accepts a good
# signature and rejects a wrong one.
verify_paths() {
    local step=$1 name=$2 other=$3 a # other: a key file
    local -a sigopt=()
    shift 3
    for a in "$@"; do
        [ "$a" = -pkeyopt ] && sigopt+=(-sigopt) || sigopt+=("$a")
    done
    # In pieces.
    run_ok "$step-sign" ossl pkeyutl -sign -rawin -digest sha256 -inkey "$(key_uri "$name")" \
        "$@" -in "$WORK/data" -out "$WORK/$step.sig"
    run_ok "$step-verify" plain_ossl pkeyutl -verify -rawin -digest sha256 -pubin \
        -inkey "$WORK/$name.pub.pem" "$@" -in "$WORK/data" -sigfile "$WORK/$step.sig"
    run_ok "$step-pverify" ossl dgst -sha256 "${sigopt[@]}" -prverify "$(key_uri "$name")" \
        -signature "$WORK/$step.sig" "$WORK/data"
    assert_grep "$WORK/$step-pverify.out" '^Verified OK$' \
        "$step: the token key's verification in pieces did not accept its signature"
    cp "$WORK/data" "$WORK/$step.bad"
    printf 'x' | dd of="$WORK/$step.bad" bs=1 seek=500 conv=notrunc status=none
    run_fails "$step-pverify-bad" ossl pkeyutl -verify -rawin -digest sha256 \
        -inkey "$(key_uri "$name")" "$@" -in "$WORK/$step.bad" -sigfile "$WORK/$step.sig"
    # In one call.
    run_ok "$step-req" ossl req -new -key "$(key_uri "$name")" -subj "/CN=$step" -sha256 \
        "${sigopt[@]}" -out "$WORK/$step.csr"
    run_ok "$step-req-verify" plain_ossl req -in "$WORK/$step.csr" -noout -verify
    assert_grep "$WORK/$step-req-verify.err" 'verify OK' \
        "$step: a request signed in one call does not verify"
    run_ok "$step-req-pverify" ossl req -in "$WORK/$step.csr" -noout -verify \
        -key "$(key_uri "$name")"
    assert_grep "$WORK/$step-req-pverify.err" 'verify OK' \
        "$step: the token key's one-call verification did not accept its signature"
    run_ok "$step-req-other" plain_ossl req -new -key "$other" -subj "/CN=$step" -sha256 \
        "${sigopt[@]}" -out "$WORK/$step.other.csr"
    ossl req -in "$WORK/$step.other.csr" -noout -verify -key "$(key_uri "$name")" \
        >"$WORK/$step-req-pverify-bad.out" 2>"$WORK/$step-req-pverify-bad.err" || true
    assert_grep "$WORK/$step-req-pverify-bad.err" 'verify failure' \
        "$step: the token key's one-call verification accepted another key's signature"
    n=$((n + 2))
}
# A software key of the same type signs the request that must not verify.
run_ok soft-ec plain_ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
    -out "$WORK/soft-ec.pem"
run_ok soft-rsa plain_ossl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 \
    -out "$WORK/soft-rsa.pem"
verify_paths verify-ecdsa ec256 "$WORK/soft-ec.pem"
verify_paths verify-rsa-pss rsa "$WORK/soft-rsa.pem" -pkeyopt rsa_padding_mode:pss -pkeyopt rsa_pss_saltlen:digest

# RSA decryption: encrypt with the public key in software, decrypt in the token.
head -c 32 /dev/urandom >"$WORK/secret"
dec() {
    local step=$1
    shift
    run_ok "$step-enc" plain_ossl pkeyutl -encrypt -pubin -inkey "$WORK/rsa.pub.pem" "$@" \
        -in "$WORK/secret" -out "$WORK/$step.ct"
    run_ok "$step" ossl pkeyutl -decrypt -inkey "$(key_uri rsa)" "$@" \
        -in "$WORK/$step.ct" -out "$WORK/$step.pt"
    cmp -s "$WORK/secret" "$WORK/$step.pt" || fail "$step: decrypted text differs from the plaintext"
    n=$((n + 1))
}
dec rsa-decrypt-pkcs1 -pkeyopt rsa_padding_mode:pkcs1
dec rsa-decrypt-oaep -pkeyopt rsa_padding_mode:oaep
# SoftHSM 2.6.1 does OAEP with SHA-1 only (C_DecryptInit: CKR_ARGUMENTS_BAD
# for other hashes, pkcs11-tool gets the same): a clean failure that names the
# call and the token.
run_ok oaep256-enc plain_ossl pkeyutl -encrypt -pubin -inkey "$WORK/rsa.pub.pem" \
    -pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256 -pkeyopt rsa_mgf1_md:sha256 \
    -in "$WORK/secret" -out "$WORK/oaep256.ct"
run_fails oaep256 ossl pkeyutl -decrypt -inkey "$(key_uri rsa)" -pkeyopt rsa_padding_mode:oaep \
    -pkeyopt rsa_oaep_md:sha256 -pkeyopt rsa_mgf1_md:sha256 -in "$WORK/oaep256.ct" \
    -out "$WORK/oaep256.pt"
assert_grep "$WORK/oaep256.err" "C_Decrypt.*CKR_.*mtls-a" \
    "OAEP-SHA256 on SoftHSM: the error does not name the PKCS#11 call, its CKR_ and the token"

# The private half never leaves: exporting it fails, printing shows no secret.
for k in ec256 rsa; do
    # Every form a private key is written in: refused, with the reason.
    for form in "" "-outform DER" "-aes256 -passout pass:secret"; do
        step=export-$k-$(printf '%s' "${form:-pem}" | tr -c 'A-Za-z0-9' -)
        # shellcheck disable=SC2086 # the form is several options
        run_fails "$step" ossl pkey -in "$(key_uri "$k")" $form -out "$WORK/$step.key"
        if [ -s "$WORK/$step.key" ]; then
            fail "$step: a private key was written out ($(head -c 40 "$WORK/$step.key" | tr -d '\0'))"
        fi
        assert_grep "$WORK/$step.err" "the private key pkcs11:.*object=$k.* stays in its token and cannot be written out" \
            "$step: the refusal does not say why"
    done
    # openssl pkcs8 reads files only: the key reference file.
    run_fails "export-$k-pkcs8" ossl pkcs8 -topk8 -nocrypt -in "$WORK/$k.key.pem" \
        -out "$WORK/$k.p8"
    [ ! -s "$WORK/$k.p8" ] || fail "export-$k-pkcs8: a private key was written out"
    assert_grep "$WORK/export-$k-pkcs8.err" "stays in its token" \
        "export-$k-pkcs8: the refusal does not say why"
    # The public half prints; the private half has nothing to print (it may
    # fail, it must not crash or show private components).
    run_ok "text-pub-$k" ossl pkey -in "$(key_uri "$k")" -text_pub -noout
    assert_grep "$WORK/text-pub-$k.out" '^ *(pub|Modulus):' "$k: public key not printed"
    rc=0
    ossl pkey -in "$(key_uri "$k")" -text -noout >"$WORK/text-$k.out" 2>&1 || rc=$?
    [ "$rc" -le 125 ] || fail "$k: openssl pkey -text crashed (exit $rc)"
    assert_no_grep "$WORK/text-$k.out" '^ *(priv|privateExponent|prime1|exponent1):' \
        "$k: private components printed"
done
note "$n signatures and decryptions in the token verified; private halves not exportable"
