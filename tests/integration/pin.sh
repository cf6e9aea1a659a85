#!/usr/bin/env bash
# Where PINs come from, and what a wrong one does.
# - The CLI has no option that takes a PIN itself.
# - --pin-source file:PATH, the config's pkcs11-pin-source, the URI's
#   pin-source, and OpenSSL's passphrase callback (here -passin / -pass,
#   which feed the same callback a terminal prompt would) each unlock the key.
# - A wrong PIN fails cleanly, with an error that names the token, the PKCS#11
#   call and CKR_PIN_INCORRECT, leaves no output file, and the right PIN works
#   afterwards (the token was not locked by retries).
# - A PIN file open to group or others still works, with a warning naming the
#   file and chmod 600; an empty answer at the terminal prompt says the PIN
#   was empty (not "run on a terminal").
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/tpm.sh" # run_pty

setup_test
new_token mtls-a

enroll web ec:P-256 both
URI=$ENROLL_URI
(
    umask 077
    printf '9999' >"$WORK/wrong-pin"
)
echo "sign me" >"$WORK/data"
spki_of_csr "$WORK/web.csr" "$WORK/web.pub.pem"
nopin() { OPENSSL_CONF=$TOKEN_CNF_NOPIN "$@"; }

# sign_check STEP CMD...: CMD signs $WORK/data into $WORK/STEP.sig; it verifies.
sign_check() {
    local step=$1
    shift
    run_ok "$step" "$@" -out "$WORK/$step.sig" "$WORK/data"
    run_ok "$step-verify" plain_ossl dgst -sha256 -verify "$WORK/web.pub.pem" \
        -signature "$WORK/$step.sig" "$WORK/data"
    assert_grep "$WORK/$step-verify.out" '^Verified OK$' "$step: signature does not verify"
}

# The PIN from each source.
sign_check config-pin ossl dgst -sha256 -sign "$URI"
sign_check uri-pin nopin openssl dgst -sha256 -sign "$URI;pin-source=file:$PIN_FILE"
sign_check passin nopin openssl dgst -sha256 -sign "$URI" -passin "file:$PIN_FILE"
sign_check passin-keyref nopin openssl dgst -sha256 -sign "$WORK/web.key.pem" -passin "file:$PIN_FILE"
run_ok cli-pin-source "$MTLSKS_CLI" --config "$TOKEN_CNF_NOPIN" --pin-source "file:$PIN_FILE" \
    csr --key "$URI" --subject CN=web --out "$WORK/pin-source.csr"

# No PIN at all, no terminal: a clean failure that says a PIN is needed.
run_fails no-pin nopin openssl dgst -sha256 -sign "$URI" -out "$WORK/no-pin.sig" "$WORK/data" </dev/null
run_rc cli-no-pin 1 "$MTLSKS_CLI" --config "$TOKEN_CNF_NOPIN" csr --key "$URI" --subject CN=web \
    --out "$WORK/no-pin.csr" </dev/null
assert_grep "$WORK/cli-no-pin.err" 'PIN' "CLI without a PIN: the message does not say a PIN is needed"
assert_no_file "$WORK/no-pin.csr" "CLI without a PIN: CSR written"

# A wrong PIN.
run_rc cli-wrong-pin 1 "$MTLSKS_CLI" --config "$TOKEN_CNF_NOPIN" --pin-source "file:$WORK/wrong-pin" \
    csr --key "$URI" --subject CN=web --out "$WORK/wrong.csr" </dev/null
assert_grep "$WORK/cli-wrong-pin.err" 'CKR_PIN_INCORRECT' "CLI, wrong PIN: no CKR_PIN_INCORRECT in the message"
assert_grep "$WORK/cli-wrong-pin.err" 'C_Login' "CLI, wrong PIN: the message does not name C_Login"
assert_grep "$WORK/cli-wrong-pin.err" "mtls-a" "CLI, wrong PIN: the message does not name the token"
assert_no_grep "$WORK/cli-wrong-pin.err" '9999' "CLI, wrong PIN: the message shows the PIN"
assert_no_file "$WORK/wrong.csr" "CLI, wrong PIN: CSR written"

run_fails provider-wrong-pin nopin openssl dgst -sha256 -sign "$URI;pin-source=file:$WORK/wrong-pin" \
    -out "$WORK/wrong.sig" "$WORK/data" </dev/null
assert_grep "$WORK/provider-wrong-pin.err" 'CKR_PIN_INCORRECT' "provider, wrong PIN: no CKR_PIN_INCORRECT in the error"
assert_grep "$WORK/provider-wrong-pin.err" "mtls-a" "provider, wrong PIN: the error does not name the token"
assert_no_grep "$WORK/provider-wrong-pin.err" '9999' "provider, wrong PIN: the error shows the PIN"

# The token still takes the right PIN.
sign_check after-wrong ossl dgst -sha256 -sign "$URI"
# A PIN file others can read: used, with a warning that names it and the fix.
cp "$PIN_FILE" "$WORK/open-pin"
chmod 644 "$WORK/open-pin"
run_ok cli-open-pin "$MTLSKS_CLI" --config "$TOKEN_CNF_NOPIN" --pin-source "file:$WORK/open-pin" \
    csr --key "$URI" --subject CN=web --out "$WORK/open-pin.csr" </dev/null
assert_grep "$WORK/cli-open-pin.err" "warning: PIN file '$WORK/open-pin' is open to group or others \\(mode 0644\\)" \
    "PIN file mode 0644: no warning naming the file"
assert_grep "$WORK/cli-open-pin.err" "chmod 600 '$WORK/open-pin'" "PIN file mode 0644: the warning does not say chmod 600"
assert_no_grep "$WORK/cli-pin-source.err" 'warning' "PIN file mode 0600: a warning"
run_ok provider-open-pin nopin openssl dgst -sha256 -sign "$URI;pin-source=file:$WORK/open-pin" \
    -out "$WORK/open-pin.sig" "$WORK/data" </dev/null
assert_grep "$WORK/provider-open-pin.err" "PIN file '$WORK/open-pin' is open to group or others" \
    "provider, PIN file mode 0644: no warning"

# An empty answer at the terminal prompt: the message says it was empty.
PTY_RC=1 run_pty pty-empty-pin '' -- env OPENSSL_CONF="$TOKEN_CNF_NOPIN" "$MTLSKS_CLI" csr \
    --key "$URI" --subject CN=web --out "$WORK/pty-empty.csr"
assert_grep "$WORK/pty-empty-pin.out" "PIN for token 'mtls-a'" "empty PIN at the prompt: no prompt"
assert_grep "$WORK/pty-empty-pin.out" 'PIN typed at the prompt was empty' "empty PIN at the prompt: not called empty"
assert_no_grep "$WORK/pty-empty-pin.out" 'run on a terminal' "empty PIN at the prompt: suggests a terminal"
assert_no_file "$WORK/pty-empty.csr" "empty PIN at the prompt: CSR written"

# No option takes the PIN itself: `--pin 1234` is a usage error, not an
# abbreviation of --pin-source that reads a file named 1234 (and then prints
# the would-be PIN in its error message).
run_rc no-pin-option 2 "$MTLSKS_CLI" --config "$TOKEN_CNF_NOPIN" --pin 1234 list
run_rc no-pin-option-cmd 2 "$MTLSKS_CLI" --config "$TOKEN_CNF_NOPIN" csr --pin 1234 --key "$URI" \
    --subject CN=x --out "$WORK/x.csr"
assert_no_file "$WORK/x.csr" "csr --pin: CSR written"
note "PIN sources and wrong PINs: ok"
