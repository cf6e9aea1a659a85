#!/usr/bin/env bash
# test_shim.sh: the PKCS#11 shim (mtlsks-p11shim.so) forwards to SoftHSM,
# counts calls and injects faults. Makes a SoftHSM token with an EC key, runs
# the cmocka program test_p11shim (counting, fault rules, delays, control
# file) and checks through pkcs11-tool what the environment configures:
# MTLSKS_SHIM_FAULTS, MTLSKS_SHIM_COUNTS and a malformed rule list.
#
# Environment (set by CTest): MTLSKS_SHIM (the module), MTLSKS_SHIM_TEST (the
# cmocka program), MTLSKS_TMP (where the work directory goes).
. "$(dirname "$0")/../lib/common.sh"

[ -r "${MTLSKS_SHIM:-}" ] || fail "MTLSKS_SHIM not built: ${MTLSKS_SHIM:-<unset>}"
[ -x "${MTLSKS_SHIM_TEST:-}" ] || fail "MTLSKS_SHIM_TEST not built: ${MTLSKS_SHIM_TEST:-<unset>}"
require_softhsm
require_cmd pkcs11-tool
new_workdir
unset MTLSKS_SHIM_FAULTS MTLSKS_SHIM_COUNTS MTLSKS_SHIM_CONTROL MTLSKS_SHIM_MODULE

export SOFTHSM2_CONF=$WORK/softhsm2.conf
mkdir -p "$WORK/tokens"
printf '%s\n' "directories.tokendir = $WORK/tokens" "objectstore.backend = file" \
    "log.level = ERROR" "slots.removable = false" >"$SOFTHSM2_CONF"
export MTLSKS_SHIM_MODULE=$SOFTHSM_MODULE
run_ok init-token softhsm2-util --init-token --free --label shim --pin "$TEST_PIN" \
    --so-pin "$TEST_SO_PIN"
# Through the shim from the start: the key is made by C_GenerateKeyPair forwarded.
run_ok keygen pkcs11-tool --module "$MTLSKS_SHIM" --token-label shim --login --pin "$TEST_PIN" \
    --keypairgen --key-type EC:prime256v1 --label k1 --id 01

note "cmocka: counting, fault rules, delays, control file"
SHIM_TEST_TOKEN=shim SHIM_TEST_PIN=$TEST_PIN SHIM_TEST_KEY=k1 \
    MTLSKS_SHIM_CONTROL=$WORK/control run_ok cmocka "$MTLSKS_SHIM_TEST"
cat "$WORK/cmocka.out"

note "MTLSKS_SHIM_COUNTS: counts appended at C_Finalize / exit"
head -c 32 /dev/urandom >"$WORK/data" # a SHA-256-sized hash: SoftHSM signs with CKM_ECDSA only
run_ok sign env MTLSKS_SHIM_COUNTS="$WORK/counts" pkcs11-tool --module "$MTLSKS_SHIM" \
    --token-label shim --login --pin "$TEST_PIN" --sign --mechanism ECDSA --label k1 \
    --input-file "$WORK/data" --output-file "$WORK/sig"
assert_file "$WORK/sig" "signature through the shim"
assert_file "$WORK/counts" "counts file"
assert_grep "$WORK/counts" '^[0-9]+ C_Sign 1$' "one C_Sign counted"
assert_grep "$WORK/counts" '^[0-9]+ C_Login 1$' "one C_Login counted"
assert_grep "$WORK/counts" '^[0-9]+ C_Initialize 1$' "one C_Initialize counted"
assert_no_grep "$WORK/counts" ' 0$' "a zero count written"

note "MTLSKS_SHIM_FAULTS: C_Login=CKR_PIN_LOCKED"
run_fails login-locked env MTLSKS_SHIM_FAULTS=C_Login=CKR_PIN_LOCKED pkcs11-tool \
    --module "$MTLSKS_SHIM" --token-label shim --login --pin "$TEST_PIN" --list-objects
assert_grep "$WORK/login-locked.err" 'CKR_PIN_LOCKED' "the injected C_Login failure"

note "MTLSKS_SHIM_FAULTS: C_SignInit=CKR_DEVICE_ERROR@1"
run_fails sign-error env MTLSKS_SHIM_FAULTS='C_SignInit=CKR_DEVICE_ERROR@1' pkcs11-tool \
    --module "$MTLSKS_SHIM" --token-label shim --login --pin "$TEST_PIN" --sign \
    --mechanism ECDSA --label k1 --input-file "$WORK/data" --output-file "$WORK/sig2"
assert_grep "$WORK/sign-error.err" 'CKR_DEVICE_ERROR' "the injected C_SignInit failure"

note "a malformed MTLSKS_SHIM_FAULTS refuses to load"
run_fails bad-spec env MTLSKS_SHIM_FAULTS='C_Sign=CKR_NOT_A_CODE' pkcs11-tool \
    --module "$MTLSKS_SHIM" --list-slots
assert_grep "$WORK/bad-spec.err" 'MTLSKS_SHIM_FAULTS' "the shim names the bad variable"
note "p11shim: ok"
