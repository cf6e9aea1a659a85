#!/usr/bin/env bash
# acme_eab.sh
#
# External account binding: pebble with externalAccountBindingRequired and
# one MAC key.
# - without --acme-eab-kid the CA's externalAccountRequired problem is shown
#   with what to give; the key made stays under its label, and the rerun
#   with the binding continues with it;
# - a wrong MAC key is refused by the CA (unauthorized / malformed), said so;
# - the right one registers the account; the state records the key id and
#   the MAC key's file, never the MAC key; the MAC key is on no command line.
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/acme.sh"

setup_test
require_acme
new_token acme
ACME_EAB=1 acme_start

note "no binding: refused, with what to give"
acme_enroll_cmd eab
run_fails no-eab "${ACME_CMD[@]}"
assert_grep "$WORK/no-eab.err" 'urn:ietf:params:acme:error:externalAccountRequired' "the problem type is not shown"
assert_grep "$WORK/no-eab.err" 'registering the ACME account \(POST https://127\.0\.0\.1:[0-9]+/' "the request is not named"
assert_grep "$WORK/no-eab.err" '--acme-eab-kid KID --acme-eab-hmac-file FILE' "no hint to give the binding"
assert_grep "$WORK/no-eab.err" "the key 'eab' stays in token 'acme'.*run the same command again" "no word on the key left"
assert_no_file "$ACME_STATE/eab.json" "a state file after a failed enrollment"

note "a wrong MAC key: refused by the CA"
(
    umask 077
    printf '%s\n' b10lLJs8l1GPIzsLP0s6pMt8O0XVGnfTaCeROxQM0BIt2XrJMDHJZBM5NuQmQJQH >"$WORK/wrong.hmac"
)
acme_enroll_cmd eab --acme-eab-kid "$ACME_EAB_KID" --acme-eab-hmac-file "$WORK/wrong.hmac"
run_fails wrong-eab "${ACME_CMD[@]}"
assert_grep "$WORK/wrong-eab.err" 'urn:ietf:params:acme:error:(unauthorized|malformed): .*' "the CA's refusal is not shown"
assert_no_grep "$WORK/wrong-eab.err" 'b10lLJs8' "the MAC key appears in an error"

note "the right MAC key: enrolled, continuing with the key made before"
acme_enroll eab --acme-eab-kid "$ACME_EAB_KID" --acme-eab-hmac-file "$ACME_EAB_HMAC_FILE"
assert_grep "$WORK/acme-enroll-eab.err" "continuing with the key 'eab'" "the key made before was not reused"
assert_grep "$WORK/acme-enroll-eab.out" '\(new\)' "no account was registered"
assert_chains_to_pebble "$WORK/eab.crt" "the EAB certificate"
assert_grep "$ACME_STATE/eab.json" "\"eab_kid\": *\"$ACME_EAB_KID\"" "the state does not record the key id"
assert_grep "$ACME_STATE/eab.json" "\"eab_hmac_file\": *\"$ACME_EAB_HMAC_FILE\"" "the state does not record the MAC key's file"
assert_no_grep "$ACME_STATE/eab.json" "$ACME_EAB_HMAC" "the state holds the MAC key"

note "renewal with the recorded binding (the account is found again)"
run_ok renew-eab mks_acme renew --label eab
assert_grep "$WORK/renew-eab.out" "^renewed: +'eab', new key" "the renewal did not happen"
note "ok"
