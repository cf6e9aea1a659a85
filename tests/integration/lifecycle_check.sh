#!/usr/bin/env bash
# `check`: every certificate on the token with the days it has left, exit 1
# when one expires within --days (naming it), 0 when none does, 3 when a
# token, file or hook cannot be read. Days are rounded up: "2 days" just after
# issuing a 2-day certificate, "1 day" for a 1-day one. Certificates
# issued for 10 and 40 days: --days 30 fails naming the 10-day one only,
# --days 5 passes; at the threshold, --days 10 fails and --days 9 passes.
# No PIN is needed. --quiet, --json (field names), --cert FILE for
# certificates kept in files (TPM keys), retired certificates never fail,
# and --hook runs once per key that is due.
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/lifecycle.sh"

setup_test
require_cmd python3
new_token mtls-a

enroll short ec:P-256 server
enroll long ec:P-256 client
ca_sign_days "$WORK/short.csr" "$WORK/short.pem" 10
ca_sign_days "$WORK/long.csr" "$WORK/long.pem" 40
run_ok import-short mks import-cert --label short "$WORK/short.pem"
run_ok import-long mks import-cert --label long "$WORK/long.pem"

# The checks run without a PIN source: certificates are public objects.
check() { OPENSSL_CONF=$TOKEN_CNF_NOPIN "$MTLSKS_CLI" check "$@"; }

# --- exit codes at the thresholds ---------------------------------------------
run_rc check-30 1 check --days 30
assert_grep "$WORK/check-30.out" '^EXPIRING +short ' "--days 30: the 10-day certificate is not flagged"
assert_grep "$WORK/check-30.out" '^ok +long ' "--days 30: the 40-day certificate is not ok"
assert_grep "$WORK/check-30.out" 'expires within 30 days: short \(' "--days 30: summary does not name short"
assert_no_grep "$WORK/check-30.out" 'within 30 days:.* long ' "--days 30: summary names the 40-day certificate"
run_rc check-default 1 check
assert_grep "$WORK/check-default.out" 'within 30 days' "the default threshold is not 30 days"
# Days left: a 2-day certificate issued a moment ago has 2 days left (not 1),
# and one day is "1 day".
ca_sign_days "$WORK/short.csr" "$WORK/two.pem" 2
ca_sign_days "$WORK/short.csr" "$WORK/one.pem" 1
run_rc check-days 1 check --no-tokens --days 5 --cert "$WORK/two.pem" --cert "$WORK/one.pem"
assert_grep "$WORK/check-days.out" "^EXPIRING +.*two\.pem +2 days " "a fresh 2-day certificate: 2 days left"
assert_grep "$WORK/check-days.out" "^EXPIRING +.*one\.pem +1 day " "a fresh 1-day certificate: '1 day'"
assert_no_grep "$WORK/check-days.out" '[^0-9]1 days' "'1 days' in check's output"
run_rc check-5 0 check --days 5
assert_grep "$WORK/check-5.out" 'OK: 2 certificates, none expires within 5 days' "--days 5: summary"
run_rc check-10 1 check --days 10
run_rc check-9 0 check --days 9
run_rc check-40 1 check --days 40
assert_grep "$WORK/check-40.out" 'within 40 days: long \(.*\), short \(' "--days 40: both are due"

# --- --quiet: only what is due --------------------------------------------------
run_rc quiet-30 1 check --days 30 --quiet
assert_eq "$(wc -l <"$WORK/quiet-30.out")" 1 "--quiet --days 30: lines"
assert_grep "$WORK/quiet-30.out" '^EXPIRING +short ' "--quiet: the due certificate"
run_rc quiet-5 0 check --days 5 --quiet
assert_eq "$(wc -c <"$WORK/quiet-5.out")" 0 "--quiet --days 5: output"

# --- --json ---------------------------------------------------------------------
run_rc json-30 1 check --days 30 --json
j=$WORK/json-30.out
assert_eq "$(json_eval "$j" 'd["days"], d["ok"], d["expiring"], len(d["certificates"]), d["errors"]')" \
    "(30, False, 1, 2, [])" "check --json: top-level fields"
assert_eq "$(json_eval "$j" 'sorted(d["certificates"][0].keys())')" \
    "['bits', 'ca', 'curve', 'days_left', 'extended_key_usage', 'fails', 'file', 'issuer', 'key_type', 'key_usage', 'label', 'not_after', 'not_before', 'renewal_pending', 'role', 'sans', 'seconds_left', 'serial', 'sha256', 'source', 'status', 'subject', 'token', 'uri']" \
    "check --json: certificate fields"
# Days left, rounded down: 39 for a 40-day certificate, 40 within its first second.
assert_eq "$(json_eval "$j" '[(c["label"], c["status"], c["fails"], c["role"], c["source"], c["token"]) for c in d["certificates"]]')" \
    "[('long', 'ok', False, 'current', 'token', 'mtls-a'), ('short', 'expiring', True, 'current', 'token', 'mtls-a')]" \
    "check --json: certificates"
assert_eq "$(json_eval "$j" '[c["days_left"] == t and abs(c["seconds_left"] - t * 86400) < 120 for c, t in zip(d["certificates"], (40, 10))]')" \
    "[True, True]" "check --json: days_left and seconds_left"
assert_eq "$(json_eval "$j" 'd["certificates"][1]["sans"]')" "['DNS:short.test', 'DNS:localhost', 'IP:127.0.0.1']" \
    "check --json: SANs"
run_rc json-5 0 check --days 5 --json
assert_eq "$(json_eval "$WORK/json-5.out" 'd["ok"], d["expiring"]')" "(True, 0)" "check --json --days 5"

# --- token selection --------------------------------------------------------------
run_rc token-ok 0 check --days 5 --token "$TOKEN_LABEL"
run_rc token-none 3 check --days 5 --token no-such-token
assert_grep "$WORK/token-none.err" 'no-such-token' "--token for a missing token: message"

# --- certificates in files (TPM keys' certificates, anything not on a token) --------
run_ok soft-key plain_ossl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$WORK/file.key" -subj "/CN=tpm-client" -out "$WORK/file.csr"
ca_sign_days "$WORK/file.csr" "$WORK/file.pem" 3
cat "$WORK/file.pem" "$MTLSKS_FIXTURE/ca.pem" >"$WORK/file-chain.pem"
run_rc file-30 1 check --no-tokens --cert "$WORK/file.pem" --days 30
assert_grep "$WORK/file-30.out" "^EXPIRING +$WORK/file.pem " "--cert: the file's certificate is not named"
run_rc file-2 0 check --no-tokens --cert "$WORK/file.pem" --days 2
assert_grep "$WORK/file-30.out" "^EXPIRING +$WORK/file.pem +3 days " "--cert: a 3-day certificate is not '3 days'"
ca_sign_days "$WORK/file.csr" "$WORK/file1.pem" 1
run_rc file-1 1 check --no-tokens --cert "$WORK/file1.pem" --days 1
assert_grep "$WORK/file-1.out" "^EXPIRING +$WORK/file1.pem +1 day " "--cert: a 1-day certificate is not '1 day'"
assert_grep "$WORK/file-1.out" "within 1 day: $WORK/file1.pem \\(file, 1 day\\)" "--days 1: summary"
run_rc file-due-and-missing 3 check --no-tokens --cert "$WORK/file1.pem" --cert "$WORK/nope.pem" --days 1
assert_grep "$WORK/file-due-and-missing.out" "^EXPIRING +$WORK/file1.pem " "an unreadable file hides the due one"
run_rc file-chain 1 check --no-tokens --cert "$WORK/file-chain.pem" --days 30 --json
assert_eq "$(json_eval "$WORK/file-chain.out" '[(c["source"], c["role"], c["file"] is not None) for c in d["certificates"]]')" \
    "[('file', 'current', True), ('file', 'chain', True)]" "--cert with a chain: roles"
run_rc file-and-token 1 check --cert "$WORK/file.pem" --days 5
assert_grep "$WORK/file-and-token.out" "^EXPIRING +$WORK/file.pem " "tokens and files together"
run_rc file-missing 3 check --no-tokens --cert "$WORK/nope.pem"
assert_grep "$WORK/file-missing.err" 'nope.pem' "--cert of a missing file: message"

# --- retired certificates never fail ----------------------------------------------
run_ok renew-short mks renew --label short --out "$WORK/short-next.csr"
ca_sign_days "$WORK/short-next.csr" "$WORK/short2.pem" 40
run_ok import-short2 mks import-cert --label short "$WORK/short2.pem"
run_rc retired-30 0 check --days 30
assert_grep "$WORK/retired-30.out" '^retired +short\.old ' "the retired certificate is not shown as retired"
run_rc retired-json 0 check --days 30 --json
assert_eq "$(json_eval "$WORK/retired-json.out" '[(c["label"], c["role"], c["status"], c["fails"]) for c in d["certificates"] if c["label"] == "short.old"]')" \
    "[('short.old', 'retired', 'retired', False)]" "check --json: the retired certificate"

# --- --hook ---------------------------------------------------------------------------
hook=$WORK/hook.sh
cat >"$hook" <<EOF
#!/bin/sh
echo "\$1|\$MTLSKS_LABEL|\$MTLSKS_TOKEN|\$MTLSKS_DAYS_LEFT|\$MTLSKS_RENEWAL_PENDING|\$MTLSKS_CERT_FILE" >>"$WORK/hook.log"
exit \${HOOK_RC:-0}
EOF
chmod 755 "$hook"
run_rc hook-5 0 check --days 5 --hook "$hook"
assert_no_file "$WORK/hook.log" "the hook ran although nothing is due"
run_rc hook-45 0 check --days 45 --hook "$hook" --cert "$WORK/file.pem"
sort "$WORK/hook.log" >"$WORK/hook.sorted"
printf '%s\n' "$WORK/file.pem|||3|0|$WORK/file.pem" "long|long|mtls-a|40|0|" "short|short|mtls-a|40|0|" \
    | sort >"$WORK/hook.want"
assert_same_file "$WORK/hook.sorted" "$WORK/hook.want" "hook runs (one per due key, none for short.old)"
rm -f "$WORK/hook.log"
run_rc hook-fails 1 env HOOK_RC=3 OPENSSL_CONF="$TOKEN_CNF_NOPIN" "$MTLSKS_CLI" check --days 45 --hook "$hook"
assert_grep "$WORK/hook-fails.err" 'exited with 3' "a failing hook: message"
run_ok renew-long mks renew --label long --out "$WORK/long-next.csr"
rm -f "$WORK/hook.log"
run_rc hook-pending 0 check --days 45 --hook "$hook"
assert_grep "$WORK/hook.log" '^long\|long\|mtls-a\|40\|1\|$' "the hook is not told a renewal is pending"

# --- usage errors ---------------------------------------------------------------------
run_rc bad-days 2 check --days soon
run_rc json-quiet 2 check --json --quiet
run_rc no-tokens-alone 2 check --no-tokens
run_rc hook-relative 2 check --hook hook.sh
run_rc hook-missing 3 check --hook "$WORK/no-such-hook"
note "check: ok"
