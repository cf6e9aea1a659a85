#!/usr/bin/env bash
# tpm_password.sh: TPM keys with a password (auth value).
# - enroll --tpm --password-source file:PATH makes a key with that password;
#   the CLI, openssl (-passin / -pass, the passphrase callback a prompt would
#   answer) and s_client use it with the right password.
# - A wrong password fails with exit 1 and a message that says the TPM
#   rejected the key's password and where it came from; it is not retried and
#   not echoed. No password where one is needed fails before the TPM is asked
#   (no strike against the dictionary-attack counter).
# - On a terminal, enroll asks for the new password twice and csr once, with
#   echo off.
# - swtpm locks authorisation after 3 failures: the test resets the lockout
#   (tpm2_dictionarylockout --clear-lockout) and checks the counter is 0 and
#   the right password still works.
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/tpm.sh"

setup_tpm_test_on_swtpm
trap 'tpm2_dictionarylockout --clear-lockout -T "$TPM_TCTI" >/dev/null 2>&1 || true; _cleanup' EXIT

(
    umask 077
    printf 'correct horse\n' >"$WORK/pw"
    printf 'battery staple\n' >"$WORK/wrong-pw"
    printf 'tty pass phrase\n' >"$WORK/tty-pw"
    : >"$WORK/empty-pw"
)

tpm_enroll pk ec:P-256 both --password-source "file:$WORK/pw"
assert_grep "$WORK/enroll-pk.out" "^auth: +password \(from file:$WORK/pw\)" "enroll: password noted"
tpm_enroll pkp ec:P-256 both --password-source "file:$WORK/pw" --persist 0x81000077
tpm_enroll srv ec:P-256 server
ca_sign "$WORK/pk.csr" "$WORK/pk.pem"
ca_sign "$WORK/srv.csr" "$WORK/srv.pem"
spki_of_csr "$WORK/pk.csr" "$WORK/pk.pub"

# The right password: CLI, openssl dgst, s_client.
run_ok csr-right mks csr --key "$WORK/pk.key.pem" --password-source "file:$WORK/pw" \
    --subject CN=again --out "$WORK/again.csr"
run_ok csr-right-handle mks csr --key tpmkey:handle=0x81000077 --password-source "file:$WORK/pw" \
    --subject CN=again --out "$WORK/again-h.csr"
echo "sign me" >"$WORK/data"
run_ok dgst-right ossl dgst -sha256 -sign "$WORK/pk.key.pem" -passin "file:$WORK/pw" \
    -out "$WORK/data.sig" "$WORK/data"
run_ok dgst-verify plain_ossl dgst -sha256 -verify "$WORK/pk.pub" -signature "$WORK/data.sig" "$WORK/data"
TLS_CLIENT_ARGS=(-pass "file:$WORK/pw")
tls_handshake pw-client 1_3 "$WORK/srv.pem" "$WORK/srv.key.pem" "$WORK/pk.pem" "$WORK/pk.key.pem"
TLS_CLIENT_ARGS=()
assert_eq "$(tpm_lockout_counter "$TPM_TCTI")" 0 "no failed authorisation so far"

# No password where the key needs one: refused before the TPM is asked.
run_rc csr-none 1 mks csr --key "$WORK/pk.key.pem" --subject CN=x --out "$WORK/x.csr"
assert_grep "$WORK/csr-none.err" 'has a password: give it with --password-source file:PATH' \
    "no password: what to do"
run_rc csr-none-handle 1 mks csr --key tpmkey:handle=0x81000077 --subject CN=x --out "$WORK/x.csr"
assert_grep "$WORK/csr-none-handle.err" 'has a password' "no password (persistent key)"
run_rc csr-empty 1 mks csr --key "$WORK/pk.key.pem" --password-source "file:$WORK/empty-pw" \
    --subject CN=x --out "$WORK/x.csr"
assert_grep "$WORK/csr-empty.err" "--password-source file:$WORK/empty-pw: cannot read the TPM key's password" \
    "empty password file"
run_rc csr-pkcs11-pw 2 mks csr --key "pkcs11:token=x;object=y" --password-source "file:$WORK/pw" \
    --subject CN=x --out "$WORK/x.csr"
assert_eq "$(tpm_lockout_counter "$TPM_TCTI")" 0 "a missing password costs no strike"

# A wrong password: one strike each, clear messages, nothing written.
run_rc csr-wrong 1 mks csr --key "$WORK/pk.key.pem" --password-source "file:$WORK/wrong-pw" \
    --subject CN=x --out "$WORK/x.csr"
assert_grep "$WORK/csr-wrong.err" 'the TPM rejected the key password' "wrong password: keystore message"
assert_grep "$WORK/csr-wrong.err" "rejected the password of TPM key .*pk.key.pem \(from --password-source file:$WORK/wrong-pw\); it is not tried again" \
    "wrong password: names the key and the source"
assert_no_grep "$WORK/csr-wrong.err" 'battery|horse' "the password is not echoed"
assert_no_file "$WORK/x.csr" "wrong password: CSR"
[ "$(grep -c 'TPM2_Sign failed' "$WORK/csr-wrong.err")" = 1 ] || fail "wrong password: tried more than once"
run_fails dgst-wrong ossl dgst -sha256 -sign "$WORK/pk.key.pem" -passin "file:$WORK/wrong-pw" \
    -out "$WORK/wrong.sig" "$WORK/data"
assert_grep "$WORK/dgst-wrong.err" 'rejected the key password' "openssl dgst: wrong password message"
assert_eq "$(tpm_lockout_counter "$TPM_TCTI")" 2 "two wrong passwords, two strikes"

tpm_reset_lockout "$TPM_TCTI"
assert_eq "$(tpm_lockout_counter "$TPM_TCTI")" 0 "lockout counter after the reset"

# On a terminal: enroll asks twice with echo off, csr asks once; the password
# typed is never shown.
run_pty pty-enroll 'tty pass phrase' 'tty pass phrase' -- env OPENSSL_CONF="$TOKEN_CNF" \
    "$MTLSKS_CLI" enroll --tpm --subject CN=tty --out "$WORK/tty.csr" --key-ref "$WORK/tty.key.pem"
assert_grep "$WORK/pty-enroll.out" '^New password for TPM key .*tty.key.pem' "enroll: prompt"
assert_grep "$WORK/pty-enroll.out" '^Verifying - New password' "enroll: asks twice"
assert_grep "$WORK/pty-enroll.out" 'auth: +password \(typed at the prompt\)' "enroll: password set"
assert_no_grep "$WORK/pty-enroll.out" 'tty pass phrase' "enroll: the password is not echoed"
run_pty pty-csr 'tty pass phrase' -- env OPENSSL_CONF="$TOKEN_CNF" \
    "$MTLSKS_CLI" csr --key "$WORK/tty.key.pem" --subject CN=tty --out "$WORK/tty2.csr"
[ "$(grep -c '^Password for TPM key' "$WORK/pty-csr.out")" = 1 ] || fail "csr: not asked exactly once"
assert_no_grep "$WORK/pty-csr.out" 'tty pass phrase' "csr: the password is not echoed"
run_ok pty-file-csr mks csr --key "$WORK/tty.key.pem" --password-source "file:$WORK/tty-pw" \
    --subject CN=tty --out "$WORK/tty3.csr"
assert_eq "$(tpm_lockout_counter "$TPM_TCTI")" 0 "the typed password was right"
run_ok csr-after-reset mks csr --key "$WORK/pk.key.pem" --password-source "file:$WORK/pw" \
    --subject CN=again --out "$WORK/again.csr" --force
tpm_assert_no_transient "$TPM_TCTI" "after the password tests"
note "TPM key passwords: right, missing, empty and wrong ones; lockout reset: ok"
