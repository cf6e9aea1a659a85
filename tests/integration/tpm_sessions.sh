#!/usr/bin/env bash
# tpm_sessions.sh [bare|tabrmd]
#
# A TPM key's password never crosses the TPM interface: every command that
# uses it runs under an HMAC session salted with the storage primary, and the
# new key's password in TPM2_Create and the plaintext of TPM2_RSA_Decrypt go
# encrypted. tpm2-tss's pcap TCTI ("pcap:TCTI", the file in TCTI_PCAP_FILE)
# records every command and response between a process and the TPM:
# - enroll --tpm with --password-source (EC, and RSA with --persist), csr
#   --key, openssl pkeyutl signing and decrypting, an s_client handshake with
#   the password key: the password bytes are in none of the captures, nor the
#   decrypted plaintext;
# - the control: tpm2-openssl (password sessions) signing with the same key
#   file puts the password on the wire, so the search would find it;
# - a wrong password fails once (one TPM2_Sign in the capture, one strike on
#   the lockout counter), with the message that says so, and is not retried;
# - the commands per signature and per handshake with a password, as the
#   capture counts them (printed);
# - keys made before HMAC sessions (tests/data/tpm-keys-v0: the state of the
#   swtpm they were made in, a key file with a password and one without)
#   still load and sign.
# bare (default): on the swtpm itself, a session per operation. tabrmd:
# behind tpm2-abrmd, one session per process, reused.
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/tpm.sh"

RM=${1:-bare}
case $RM in bare | tabrmd) ;; *) fail "unknown resource manager $RM" ;; esac

setup_tpm_test
require_tpm2_tools
tpm_pcap_available || skip "tpm2-tss's pcap TCTI is not installed (Debian package libtss2-tcti-pcap0)"
[ "$RM" = bare ] || require_tabrmd
start_swtpm a
if [ "$RM" = tabrmd ]; then
    start_tabrmd "$SWTPM_TCTI"
    use_tpm "$TABRMD_TCTI"
else
    use_tpm "$SWTPM_TCTI"
fi
trap 'tpm2_dictionarylockout --clear-lockout -T "$SWTPM_TCTI" >/dev/null 2>&1 || true; _cleanup' EXIT

PASSWORD='wire-check Tr0ub4dor&3'
(
    umask 077
    printf '%s\n' "$PASSWORD" >"$WORK/pw"
    printf 'battery staple\n' >"$WORK/wrong-pw"
)
# The same configuration with the pcap TCTI around the TPM's.
PCAP_CNF=$WORK/pcap.cnf
tpm_cnf "$PCAP_CNF" "pcap:$TPM_TCTI" "file:$PIN_FILE"

# captured STEP CMD...: runs CMD (which must exit 0) with the pcap TCTI,
# capturing into $WORK/STEP.pcap.
captured() {
    local step=$1
    shift
    run_ok "$step" env OPENSSL_CONF="$PCAP_CNF" TCTI_PCAP_FILE="$WORK/$step.pcap" "$@"
    assert_file "$WORK/$step.pcap" "$step: capture"
}

# assert_not_on_wire STEP BYTES WHAT: BYTES appear nowhere in $WORK/STEP.pcap.
assert_not_on_wire() {
    python3 - "$WORK/$1.pcap" "$2" <<'PY' || fail "$1: $3 is on the wire (in $1.pcap)"
import sys
sys.exit(1 if sys.argv[2].encode() in open(sys.argv[1], "rb").read() else 0)
PY
}


# --- the password in TPM2_Create ---
# enroll_captured NAME ARGS...: tpm_enroll with the pcap TCTI, into
# $WORK/enroll-NAME.pcap.
enroll_captured() {
    local name=$1 saved=$TOKEN_CNF
    shift
    TOKEN_CNF=$PCAP_CNF
    export TCTI_PCAP_FILE=$WORK/enroll-$name.pcap
    tpm_enroll "$name" "$@"
    unset TCTI_PCAP_FILE
    TOKEN_CNF=$saved
}
enroll_captured pk ec:P-256 both --password-source "file:$WORK/pw"
enroll_captured rk rsa:2048 both --password-source "file:$WORK/pw" --persist 0x81000042
for k in pk rk; do
    note "enroll $k: $(tpm_pcap_commands "$WORK/enroll-$k.pcap")"
    tpm_pcap_commands "$WORK/enroll-$k.pcap" | grep -q ' Create ' || fail "enroll $k: no TPM2_Create captured"
    assert_not_on_wire "enroll-$k" "$PASSWORD" "the new key's password"
done
tpm_enroll srv ec:P-256 server
ca_sign "$WORK/pk.csr" "$WORK/pk.pem"
ca_sign "$WORK/srv.csr" "$WORK/srv.pem"
spki_of_csr "$WORK/pk.csr" "$WORK/pk.pub"
spki_of_csr "$WORK/rk.csr" "$WORK/rk.pub"

# --- signing and decrypting with it ---
captured csr "$MTLSKS_CLI" csr --key "$WORK/pk.key.pem" --password-source "file:$WORK/pw" \
    --subject CN=again --out "$WORK/again.csr"
assert_not_on_wire csr "$PASSWORD" "the password (csr --key)"
echo "sign me" >"$WORK/data"
run_ok digest plain_ossl dgst -sha256 -binary -out "$WORK/data.sha256" "$WORK/data"
captured pkeyutl-sign openssl pkeyutl -sign -inkey "$WORK/pk.key.pem" -passin "file:$WORK/pw" \
    -in "$WORK/data.sha256" -out "$WORK/data.sig"
run_ok pkeyutl-verify plain_ossl pkeyutl -verify -pubin -inkey "$WORK/pk.pub" \
    -in "$WORK/data.sha256" -sigfile "$WORK/data.sig"
assert_not_on_wire pkeyutl-sign "$PASSWORD" "the password (pkeyutl -sign)"
PLAINTEXT='decrypted only inside the TPM'
printf '%s' "$PLAINTEXT" >"$WORK/plain"
run_ok encrypt plain_ossl pkeyutl -encrypt -pubin -inkey "$WORK/rk.pub" -in "$WORK/plain" \
    -out "$WORK/cipher"
captured pkeyutl-decrypt openssl pkeyutl -decrypt -inkey tpmkey:handle=0x81000042 \
    -passin "file:$WORK/pw" -in "$WORK/cipher" -out "$WORK/decrypted"
assert_same_file "$WORK/plain" "$WORK/decrypted" "RSA decryption in the TPM"
assert_not_on_wire pkeyutl-decrypt "$PASSWORD" "the password (pkeyutl -decrypt)"
assert_not_on_wire pkeyutl-decrypt "$PLAINTEXT" "the decrypted plaintext"

# An s_client handshake with the password key against a server whose key has
# none; the client's TPM traffic is captured.
start_server "$WORK/hs.server.log" env OPENSSL_CONF="$TOKEN_CNF" openssl s_server \
    -accept 127.0.0.1:0 -naccept 1 -www -Verify 1 -verify_return_error \
    -cert "$WORK/srv.pem" -key "$WORK/srv.key.pem" -CAfile "$MTLSKS_FIXTURE/ca.pem"
hs_pid=$SERVER_PID
rc=0
printf 'GET / HTTP/1.0\r\n\r\n' | timeout 60 env OPENSSL_CONF="$PCAP_CNF" \
    TCTI_PCAP_FILE="$WORK/handshake.pcap" openssl s_client -connect "127.0.0.1:$SERVER_PORT" \
    -tls1_3 -cert "$WORK/pk.pem" -key "$WORK/pk.key.pem" -pass "file:$WORK/pw" \
    -CAfile "$MTLSKS_FIXTURE/ca.pem" -verify_return_error -ign_eof \
    >"$WORK/handshake.client.log" 2>&1 || rc=$?
wait_pid "$hs_pid" 30 || fail "s_server still running after the handshake"
if [ "$rc" -ne 0 ] || ! grep -q '^Client certificate$' "$WORK/handshake.client.log"; then
    sed 's/^/    client| /' "$WORK/handshake.client.log" >&2
    fail "the handshake with the password key failed (s_client exit $rc)"
fi
assert_not_on_wire handshake "$PASSWORD" "the password (s_client handshake)"
note "the password is in none of the captures: enroll (EC, RSA persistent), csr, pkeyutl sign and decrypt, s_client"

# What a password costs, as the captures count it.
cmds=$(tpm_pcap_commands "$WORK/handshake.pcap")
note "TPM commands of an s_client process with a password key ($RM): $cmds"
assert_eq "$(tpm_count_of Sign "$cmds")" 1 "TPM2_Sign in one handshake"
grep -q StartAuthSession <<<"$cmds" || fail "the handshake's signature ran without an HMAC session"

# --- the control: a password session carries the password itself ---
# tpm2-openssl authorises with password sessions. A key it made with the same
# password: its signature puts the password on the wire (so the search finds
# it when it is there); ours with the same key file does not.
if [ -n "$TPM2_PROVIDER_DIR" ] && [ -r "$TPM2_PROVIDER_DIR/tpm2.so" ]; then
    P2=(-provider tpm2 -provider default -propquery '?provider=tpm2')
    # user-auth takes the password on the command line: a test value.
    run_ok t2-genpkey tpm2_ossl genpkey "${P2[@]}" -algorithm EC -pkeyopt group:P-256 \
        -pkeyopt "user-auth:$PASSWORD" -out "$WORK/t2.key.pem"
    run_ok t2-pub tpm2_ossl pkey "${P2[@]}" -in "$WORK/t2.key.pem" -passin "file:$WORK/pw" -pubout \
        -out "$WORK/t2.pub"
    run_ok control env OPENSSL_CONF=/dev/null TPM2OPENSSL_TCTI="pcap:$TPM_TCTI" \
        TCTI_PCAP_FILE="$WORK/control.pcap" openssl pkeyutl "${P2[@]}" -sign \
        -inkey "$WORK/t2.key.pem" -passin "file:$WORK/pw" -in "$WORK/data.sha256" \
        -out "$WORK/control.sig"
    if (assert_not_on_wire control "$PASSWORD" x) 2>/dev/null; then
        fail "tpm2-openssl's password session: the password is not in the capture, so the search cannot see it"
    fi
    captured t2-ours openssl pkeyutl -sign -inkey "$WORK/t2.key.pem" -passin "file:$WORK/pw" \
        -in "$WORK/data.sha256" -out "$WORK/t2-ours.sig"
    run_ok t2-ours-verify plain_ossl pkeyutl -verify -pubin -inkey "$WORK/t2.pub" \
        -in "$WORK/data.sha256" -sigfile "$WORK/t2-ours.sig"
    assert_not_on_wire t2-ours "$PASSWORD" "the password (tpm2-openssl's key through ours)"
    note "control: tpm2-openssl's password session puts the password on the wire; ours with the same key does not"
else
    note "tpm2-openssl missing: no control capture with a password session"
fi

# --- a wrong password: one try, one strike, a clear message ---
tpm_reset_lockout "$SWTPM_TCTI"
before=$(tpm_lockout_counter "$SWTPM_TCTI")
rc=0
env OPENSSL_CONF="$PCAP_CNF" TCTI_PCAP_FILE="$WORK/wrong.pcap" "$MTLSKS_CLI" csr \
    --key "$WORK/pk.key.pem" --password-source "file:$WORK/wrong-pw" --subject CN=x \
    --out "$WORK/x.csr" >"$WORK/wrong.out" 2>"$WORK/wrong.err" || rc=$?
assert_eq "$rc" 1 "csr with a wrong password: exit code"
assert_grep "$WORK/wrong.err" 'the TPM rejected the key password' "wrong password: the message"
assert_grep "$WORK/wrong.err" "it is not tried again" "wrong password: not retried, says the message"
assert_no_grep "$WORK/wrong.err" 'battery|Tr0ub4dor' "wrong password: no password in the message"
wrong_cmds=$(tpm_pcap_commands "$WORK/wrong.pcap")
note "TPM commands of csr with a wrong password ($RM): $wrong_cmds"
assert_eq "$(tpm_count_of Sign "$wrong_cmds")" 1 "TPM2_Sign tries with a wrong password"
assert_eq "$(tpm_count_of Sign:RETRY "$wrong_cmds")" 0 "TPM2_Sign sent again with a wrong password"
assert_eq "$(tpm_lockout_counter "$SWTPM_TCTI")" $((before + 1)) "lockout strikes for one wrong password"
assert_not_on_wire wrong "battery staple" "the wrong password"
assert_no_file "$WORK/x.csr" "wrong password: CSR"
tpm_reset_lockout "$SWTPM_TCTI"

# --- keys made before HMAC sessions ---
OLD=$MTLSKS_SRC/tests/data/tpm-keys-v0
stop_pid "$SWTPM_PID"
[ "$RM" = bare ] || stop_pid "$TABRMD_PID"
mkdir -p "$WORK/swtpm-v0"
cp "$OLD/swtpm-state/tpm2-00.permall" "$WORK/swtpm-v0/"
start_swtpm v0
if [ "$RM" = tabrmd ]; then
    start_tabrmd "$SWTPM_TCTI"
    use_tpm "$TABRMD_TCTI"
else
    use_tpm "$SWTPM_TCTI"
fi
for k in nopw pw; do
    args=()
    [ "$k" = pw ] && args=(-passin "file:$OLD/password")
    run_ok "v0-sign-$k" ossl pkeyutl -sign -inkey "$OLD/$k.key.pem" "${args[@]}" \
        -in "$WORK/data.sha256" -out "$WORK/v0-$k.sig"
    run_ok "v0-verify-$k" plain_ossl pkeyutl -verify -pubin -inkey "$OLD/$k.pub.pem" \
        -in "$WORK/data.sha256" -sigfile "$WORK/v0-$k.sig"
done
note "key files made before HMAC sessions (with and without a password) load and sign"
tpm_assert_no_transient "$SWTPM_TCTI" "after the session tests"
