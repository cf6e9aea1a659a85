#!/usr/bin/env bash
# faults_driver.sh SCENARIO: token faults met by the provider in one process.
#
# A key in a SoftHSM token, reached through the fault-injecting PKCS#11 shim
# (tests/p11shim, pkcs11-module in openssl.cnf; the shim forwards to
# SoftHSM). tests/faults/fault_driver loads the key through mtlsks.so as
# s_server does, signs, and between signatures switches the shim's faults
# (scenarios: sign, removed, login, pin-incorrect, load, delay; see
# fault_driver.c). Each check prints one line; the whole run is bounded by a
# timeout, so a hang fails the test instead of stalling ctest.
. "$(dirname "$0")/../lib/common.sh"

SCENARIO=${1:?usage: faults_driver.sh SCENARIO}
setup_test
[ -n "${MTLSKS_SHIM:-}" ] && [ -r "$MTLSKS_SHIM" ] || fail "fault-injecting shim not built (MTLSKS_SHIM=${MTLSKS_SHIM:-})"
[ -n "${MTLSKS_FAULT_DRIVER:-}" ] && [ -x "$MTLSKS_FAULT_DRIVER" ] ||
    fail "fault_driver not built (MTLSKS_FAULT_DRIVER=${MTLSKS_FAULT_DRIVER:-})"

# A PIN no output could contain by chance (the checks grep for it).
TEST_PIN=Fq4-faults-PIN-9173
new_token faults
enroll srv ec:P-256 server
ca_sign "$WORK/srv.csr" "$WORK/srv.pem"
run_ok import-srv mks import-cert --label srv "$WORK/srv.pem"

# The same configuration, with the shim in front of SoftHSM.
SHIM_CNF=$WORK/openssl-shim.cnf
sed "s|^pkcs11-module = .*|pkcs11-module = $MTLSKS_SHIM|" "$TOKEN_CNF" >"$SHIM_CNF"
export MTLSKS_SHIM_MODULE=$SOFTHSM_MODULE FAULT_TOKEN_LABEL=$TOKEN_LABEL FAULT_KEY_URI=$ENROLL_URI
unset MTLSKS_SHIM_FAULTS MTLSKS_SHIM_CONTROL

rc=0
timeout -k 5 120 "$MTLSKS_FAULT_DRIVER" "$SHIM_CNF" "$MTLSKS_SHIM" \
    "$WORK/srv.key.pem" "$SCENARIO" >"$WORK/driver.out" 2>"$WORK/driver.err" || rc=$?
sed 's/^/    /' "$WORK/driver.out"
if [ "$rc" -ne 0 ]; then
    [ -s "$WORK/driver.err" ] && sed 's/^/    stderr| /' "$WORK/driver.err" >&2
    case $rc in
    124 | 137) fail "fault_driver $SCENARIO: still running after 120 s (a hang)" ;;
    1) fail "fault_driver $SCENARIO: $(grep -c '^FAIL' "$WORK/driver.out") checks failed" ;;
    *) fail "fault_driver $SCENARIO: exit $rc (>128 is a crash)" ;;
    esac
fi
assert_no_grep "$WORK/driver.out" '^FAIL' "fault_driver $SCENARIO"
assert_no_grep "$WORK/driver.out" "$TEST_PIN" "fault_driver $SCENARIO: an error message shows the PIN"
assert_no_grep "$WORK/driver.err" "$TEST_PIN" "fault_driver $SCENARIO: its stderr shows the PIN"
note "token faults ($SCENARIO): $(grep -c '^ok' "$WORK/driver.out") checks passed"
