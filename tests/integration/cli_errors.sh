#!/usr/bin/env bash
# Bad input to `mtls-keystore enroll` gets a clear error naming what was wrong,
# the right exit code (2: usage, the command line itself is wrong; 1: failed,
# the request cannot be done on this token) and leaves nothing behind: no CSR
# or key-reference file, no temp file in the output directory, no new object
# on the token.
. "$(dirname "$0")/../lib/common.sh"

setup_test
require_cmd pkcs11-tool
new_token mtls-a

OUT=$WORK/out
mkdir "$OUT"
enroll taken ec:P-256 client # a label that exists

objects_before=$(count_objects "$TOKEN_LABEL")
[ "$objects_before" -ge 2 ] || fail "expected the key pair 'taken' on the token, found $objects_before objects"

# expect STEP CODE MESSAGE_REGEX ENROLL_ARGS...: runs enroll with ENROLL_ARGS
# and the --out/--key-ref pair in $OUT, and checks exit code, message and that
# nothing was left behind.
n=0
expect() {
    local step=$1 code=$2 re=$3
    shift 3
    n=$((n + 1))
    local csr=$OUT/$step.csr ref=$OUT/$step.key.pem
    run_rc "$step" "$code" mks enroll "$@" --out "$csr" --key-ref "$ref"
    assert_grep "$WORK/$step.err" "$re" "$step: the error message does not say what was wrong"
    assert_grep "$WORK/$step.err" '^mtls-keystore' "$step: the error message does not name the program"
    assert_no_file "$csr" "$step: CSR left behind"
    assert_no_file "$ref" "$step: key reference left behind"
    # No temp file either: the output directory is empty again.
    [ -z "$(ls -A "$OUT")" ] || fail "$step: left behind in the output directory: $(ls -A "$OUT")"
    assert_eq "$(count_objects "$TOKEN_LABEL")" "$objects_before" "$step: objects on the token"
    note "$step: exit $code, nothing left behind"
}

# Common arguments of a valid request, and a subject that is fine.
SUBJ=(--subject "CN=ok.example.test,O=Example Org")

# --- usage errors: exit 2 -----------------------------------------------------
expect bad-subject-no-equals 2 'subject' --token mtls-a --label k1 --subject "CN" --usage client
expect bad-subject-type 2 'subject|NOSUCHATTR' --token mtls-a --label k1 --subject "NOSUCHATTR=x" --usage client
# shellcheck disable=SC1003 # a dangling backslash is the point
expect bad-subject-escape 2 'subject' --token mtls-a --label k1 --subject 'CN=a\' --usage client
expect bad-san-type 2 'san|FOO:bar' --token mtls-a --label k1 "${SUBJ[@]}" --san "FOO:bar"
expect bad-san-dns 2 'san|DNS|bad host' --token mtls-a --label k1 "${SUBJ[@]}" --san "DNS:bad host name"
expect bad-san-ip 2 'san|IP|999' --token mtls-a --label k1 "${SUBJ[@]}" --san "IP:999.1.1.1"
expect bad-san-empty 2 'san' --token mtls-a --label k1 "${SUBJ[@]}" --san "DNS:"
expect bad-key-type-curve 2 'key.type|P-521' --token mtls-a --label k1 "${SUBJ[@]}" --key-type ec:P-521
expect bad-key-type-rsa 2 'key.type|1024' --token mtls-a --label k1 "${SUBJ[@]}" --key-type rsa:1024
expect bad-key-type-alg 2 'key.type|dsa' --token mtls-a --label k1 "${SUBJ[@]}" --key-type dsa:2048
expect bad-usage 2 'usage|sometimes' --token mtls-a --label k1 "${SUBJ[@]}" --usage sometimes
expect no-label 2 'label' --token mtls-a "${SUBJ[@]}"
expect no-token-or-slot 2 'slot|token' --label k1 "${SUBJ[@]}"
expect slot-and-token 2 'slot|token' --slot 0 --token mtls-a --label k1 "${SUBJ[@]}"
expect bad-slot-number 2 'slot|zero' --slot zero --label k1 "${SUBJ[@]}"
expect unknown-option 2 'no-such-option|unrecognized|unknown' --token mtls-a --label k1 "${SUBJ[@]}" --no-such-option

# --- failures: exit 1 -----------------------------------------------------------
expect unknown-slot 1 'slot.*7|7.*slot' --slot 7 --label k1 "${SUBJ[@]}"
expect unknown-token 1 'no-such-token' --token no-such-token --label k1 "${SUBJ[@]}"
expect existing-label 1 'taken' --token mtls-a --label taken "${SUBJ[@]}"

# Output paths that exist are refused unless --force, and left untouched.
n=$((n + 1))
echo "precious" >"$OUT/exists.csr"
run_rc exists-csr 1 mks enroll --token mtls-a --label k2 "${SUBJ[@]}" \
    --out "$OUT/exists.csr" --key-ref "$OUT/k2.key.pem"
assert_grep "$WORK/exists-csr.err" 'exists.csr' "existing --out: the message does not name the file"
assert_grep "$WORK/exists-csr.err" 'exist|force' "existing --out: the message does not say it exists"
assert_eq "$(cat "$OUT/exists.csr")" precious "existing --out was modified"
assert_no_file "$OUT/k2.key.pem" "existing --out: key reference left behind"
assert_eq "$(count_objects "$TOKEN_LABEL")" "$objects_before" "existing --out: objects on the token"

n=$((n + 1))
echo "precious" >"$OUT/exists.key.pem"
run_rc exists-keyref 1 mks enroll --token mtls-a --label k3 "${SUBJ[@]}" \
    --out "$OUT/k3.csr" --key-ref "$OUT/exists.key.pem"
assert_grep "$WORK/exists-keyref.err" 'exists.key.pem' "existing --key-ref: the message does not name the file"
assert_eq "$(cat "$OUT/exists.key.pem")" precious "existing --key-ref was modified"
assert_no_file "$OUT/k3.csr" "existing --key-ref: CSR left behind"
assert_eq "$(count_objects "$TOKEN_LABEL")" "$objects_before" "existing --key-ref: objects on the token"

# An output directory that does not exist: refused before any key is made.
n=$((n + 1))
run_rc no-dir 1 mks enroll --token mtls-a --label k4 "${SUBJ[@]}" \
    --out "$OUT/no/such/dir/k4.csr" --key-ref "$OUT/k4.key.pem"
assert_grep "$WORK/no-dir.err" 'no/such/dir' "missing output directory: the message does not name it"
assert_no_file "$OUT/k4.key.pem" "missing output directory: key reference left behind"
assert_eq "$(count_objects "$TOKEN_LABEL")" "$objects_before" "missing output directory: objects on the token"

# With --force the files are replaced.
run_ok force mks enroll --token mtls-a --label k5 "${SUBJ[@]}" \
    --out "$OUT/exists.csr" --key-ref "$OUT/exists.key.pem" --force
run_ok force-verify plain_ossl req -in "$OUT/exists.csr" -verify -noout
assert_eq "$(file_mode "$OUT/exists.key.pem")" 600 "key reference replaced with --force: mode"

# Other commands. --key takes a file or a URI, so a malformed URI is found
# only when the key is opened: a failure (1), with the URI's fault named.
n=$((n + 1))
run_rc csr-bad-uri 1 mks csr --key "pkcs11:token=%zz" --subject CN=x --out "$OUT/bad-uri.csr"
assert_grep "$WORK/csr-bad-uri.err" 'uri|%zz' "csr with a malformed URI: message"
assert_no_file "$OUT/bad-uri.csr" "csr with a malformed URI: CSR left behind"
n=$((n + 1))
run_rc import-unknown-label 1 mks import-cert --label no-such-key "$MTLSKS_FIXTURE/ca.pem"
assert_grep "$WORK/import-unknown-label.err" 'no-such-key' "import-cert for an unknown label: message"
n=$((n + 1))
echo "not a certificate" >"$OUT/garbage.pem"
run_rc import-garbage 1 mks import-cert --label taken "$OUT/garbage.pem"
assert_grep "$WORK/import-garbage.err" 'garbage.pem|certificate' "import-cert of a non-certificate: message"

# Commands on existing keys take --token, not --slot: an unknown --token
# suggests the --token values that exist, never a --slot (delete rejects it).
for c in delete show renew; do
    n=$((n + 1))
    extra=()
    [ "$c" = delete ] && extra=(--yes)
    [ "$c" = renew ] && extra=(--out "$OUT/nope.csr")
    run_rc "$c-unknown-token" 1 mks "$c" --token nope --label taken "${extra[@]}"
    assert_grep "$WORK/$c-unknown-token.err" "no token labelled 'nope'" "$c --token nope: message"
    assert_grep "$WORK/$c-unknown-token.err" "--token 'mtls-a'" "$c --token nope: no --token suggested"
    assert_no_grep "$WORK/$c-unknown-token.err" '--slot' "$c --token nope suggests --slot, which $c rejects"
done
run_rc delete-slot 2 mks delete --slot 0 --label taken --yes # what the old hint said: a usage error
# enroll takes both, and still suggests both.
n=$((n + 1))
run_rc enroll-unknown-token 1 mks enroll --token nope --label k6 "${SUBJ[@]}" --out "$OUT/k6.csr" --key-ref "$OUT/k6.key.pem"
assert_grep "$WORK/enroll-unknown-token.err" "--slot 0 +--token 'mtls-a'" "enroll --token nope: choices"

# Top-level --help names the TPM too.
run_ok top-help "$MTLSKS_CLI" --help
assert_grep "$WORK/top-help.out" '--tcti' "top-level --help does not mention --tcti"
assert_grep "$WORK/top-help.out" 'TPM' "top-level --help does not mention TPM keys"
# --- configurations that do not load the provider -------------------------------
# A config without the mtlsks section, one whose section is not activated, and
# one that is missing: each names the file, says servers will not load the
# provider, and points to examples/openssl-mtlsks.cnf. The test's own
# configuration (which loads it) draws no warning.
n=$((n + 1))
printf 'openssl_conf = init\n[init]\nproviders = prov\n[prov]\ndefault = dflt\n[dflt]\nactivate = 1\n' \
    >"$OUT/no-mtlsks.cnf"
run_ok config-no-section "$MTLSKS_CLI" --config "$OUT/no-mtlsks.cnf" --module "$SOFTHSM_MODULE" list
assert_grep "$WORK/config-no-section.err" \
    "warning: .*/no-mtlsks.cnf has no mtlsks provider section.*servers reading it will not load the provider.*examples/openssl-mtlsks.cnf" \
    "a config without the mtlsks section: no warning"
n=$((n + 1))
sed '/^activate *= *1/d' "$TOKEN_CNF" >"$OUT/inactive.cnf"
grep -q '^activate' "$OUT/inactive.cnf" && fail "could not make a config without activate"
run_ok config-inactive env OPENSSL_CONF="$OUT/inactive.cnf" "$MTLSKS_CLI" list
assert_grep "$WORK/config-inactive.err" \
    "warning: .*/inactive.cnf, section \[[^]]+\]: no 'activate = 1'.*will not load the mtlsks provider.*examples/openssl-mtlsks.cnf" \
    "a config that does not activate mtlsks: no warning"
n=$((n + 1))
run_rc config-missing 1 "$MTLSKS_CLI" --config "$OUT/nope.cnf" list
assert_grep "$WORK/config-missing.err" "cannot read the configuration .*/nope.cnf: No such file.*examples/openssl-mtlsks.cnf" \
    "a missing config: the error does not point to the example"
run_ok config-good mks list
assert_no_grep "$WORK/config-good.err" 'warning' "the test's own configuration draws a warning"

assert_eq "$(count_objects "$TOKEN_LABEL")" "$((objects_before + 2))" "objects on the token at the end (taken + k5)"
note "$n bad inputs refused cleanly"
