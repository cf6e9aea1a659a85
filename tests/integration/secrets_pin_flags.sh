#!/usr/bin/env bash
# A token that reports its user PIN on the final try (CKF_USER_PIN_FINAL_TRY)
# or locked (CKF_USER_PIN_LOCKED) gets no login attempt at all: one more wrong
# PIN would lock it, and a locked PIN cannot be helped by trying. The CLI,
# openssl with a URI, openssl with a key-reference file and s_server each
# fail with an error that says why, and the PKCS#11 shim counts no C_Login.
#
# SoftHSM never sets these flags, so the shim sets them: the fault rule
# C_GetTokenInfo=flags:+FLAG forwards C_GetTokenInfo and ORs FLAG into the
# token's flags. A shim without that rule makes this test SKIP with the
# reason (not pass).
. "$(dirname "$0")/../lib/common.sh"

setup_test
[ -n "${MTLSKS_SHIM:-}" ] && [ -r "$MTLSKS_SHIM" ] || fail "fault-injecting shim not built (MTLSKS_SHIM=${MTLSKS_SHIM:-})"

new_token flags
enroll srv ec:P-256 server
URI=$ENROLL_URI
ca_sign "$WORK/srv.csr" "$WORK/srv.pem"
SHIM_CNF=$WORK/openssl-shim.cnf
sed "s|^pkcs11-module = .*|pkcs11-module = $MTLSKS_SHIM|" "$TOKEN_CNF" >"$SHIM_CNF"
echo data >"$WORK/data"
count_logins() { awk '$2 == "C_Login" { c = $3 } END { print c + 0 }' "$1"; }
# with_flag FLAG STEP CMD...: CMD with the shim adding FLAG to the token's flags.
with_flag() {
    local flag=$1 step=$2
    shift 2
    env MTLSKS_SHIM_MODULE="$SOFTHSM_MODULE" MTLSKS_SHIM_COUNTS="$WORK/$step.counts" \
        ${flag:+MTLSKS_SHIM_FAULTS="C_GetTokenInfo=flags:+$flag"} "$@"
}

# Does the shim know the rule? (A rule it cannot parse makes it refuse to load.)
rc=0
with_flag CKF_USER_PIN_FINAL_TRY probe env OPENSSL_CONF="$SHIM_CNF" openssl storeutl -certs \
    "pkcs11:token=flags" >"$WORK/probe.out" 2>"$WORK/probe.err" || rc=$?
if grep -q 'mtlsks-p11shim: MTLSKS_SHIM_FAULTS' "$WORK/probe.err"; then
    skip "the PKCS#11 shim cannot set token flags (rule C_GetTokenInfo=flags:+CKF_USER_PIN_FINAL_TRY: $(grep -m1 'mtlsks-p11shim' "$WORK/probe.err"))"
fi
[ "$rc" -eq 0 ] || fail "probe: storeutl through the shim failed: $(cat "$WORK/probe.err")"

# Control: without a flag the key signs, with one C_Login.
run_ok control with_flag "" control env OPENSSL_CONF="$SHIM_CNF" openssl dgst -sha256 -sign "$URI" \
    -out "$WORK/control.sig" "$WORK/data"
assert_eq "$(count_logins "$WORK/control.counts")" 1 "control: C_Login calls"

for flag in CKF_USER_PIN_FINAL_TRY CKF_USER_PIN_LOCKED; do
    case $flag in
    *FINAL_TRY) why='one PIN try left' ;;
    *) why='PIN is locked' ;;
    esac
    run_rc "$flag-cli" 1 with_flag "$flag" "$flag-cli" "$MTLSKS_CLI" --config "$TOKEN_CNF" \
        --module "$MTLSKS_SHIM" csr --key "$URI" --subject CN=x --out "$WORK/$flag.csr"
    run_fails "$flag-uri" with_flag "$flag" "$flag-uri" env OPENSSL_CONF="$SHIM_CNF" openssl dgst \
        -sha256 -sign "$URI" -out "$WORK/$flag-uri.sig" "$WORK/data"
    run_fails "$flag-keyref" with_flag "$flag" "$flag-keyref" env OPENSSL_CONF="$SHIM_CNF" openssl \
        dgst -sha256 -sign "$WORK/srv.key.pem" -out "$WORK/$flag-keyref.sig" "$WORK/data"
    run_fails "$flag-server" with_flag "$flag" "$flag-server" timeout 30 env OPENSSL_CONF="$SHIM_CNF" \
        openssl s_server -accept 127.0.0.1:0 -naccept 1 -www -cert "$WORK/srv.pem" \
        -key "$WORK/srv.key.pem"
    assert_no_file "$WORK/$flag.csr" "$flag: CSR written"
    for step in "$flag-cli" "$flag-uri" "$flag-keyref" "$flag-server"; do
        assert_eq "$(count_logins "$WORK/$step.counts")" 0 "$step: C_Login calls on a token that reports $flag"
    done
    for step in "$flag-cli" "$flag-uri"; do
        assert_grep "$WORK/$step.err" "$why" "$step: the error does not say '$why'"
    done
    # Key-reference files (servers): the reason must reach the user too.
    for step in "$flag-keyref" "$flag-server"; do
        assert_grep "$WORK/$step.err" "$why" "$step: the error does not say '$why' (key-reference file)"
    done
    note "$flag: no login attempted; the CLI, openssl (URI, key file) and s_server refuse"
done
