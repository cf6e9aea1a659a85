#!/usr/bin/env bash
# acme_renew.sh
#
# Unattended renewal of ACME-enrolled certificates and revocation:
# - renew --label NAME makes a new key (NAME.next, handed over: NAME is the
#   new key, NAME.old the previous one), --key-ref and --cert-out follow,
#   and the deploy hook runs with MTLSKS_LABEL, MTLSKS_CERT, MTLSKS_KEY_REF;
#   --same-key keeps the key and changes the certificate;
# - check --renew renews exactly the certificates that are due (one due, one
#   not, by --renew-before), with a new key, and --json reports each
#   outcome; by default (a third of the lifetime) fresh certificates are not
#   due; a failing deploy hook fails the run, the certificate stays in place;
# - revoke --label NAME --reason keyCompromise: pebble's
#   /cert-status-by-serial/ shows the certificate revoked, reason 1; the next
#   check --renew replaces it.
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/acme.sh"

setup_test
require_acme
new_token acme
acme_start

cat >"$WORK/deploy-hook" <<EOF
#!/bin/sh
echo "\$MTLSKS_LABEL \$MTLSKS_CERT \$MTLSKS_KEY_REF" >>"$WORK/deploy.log"
[ ! -e "$WORK/hook-fails" ]
EOF
chmod +x "$WORK/deploy-hook"

# The token's CKA_ID of the private key labelled $1.
key_id() {
    p11tool_ --token-label acme --login --pin "$TEST_PIN" --list-objects --type privkey 2>/dev/null |
        awk -v l="$1" '/^Private Key Object/{lab=""} /label:/{lab=$2} /ID:/{if (lab==l) print $2}'
}
serial_of() { plain_ossl x509 -in "$1" -noout -serial | sed 's/^serial=//'; }

acme_enroll a --deploy-hook "$WORK/deploy-hook"
id0=$(key_id a)
serial0=$(serial_of "$WORK/a.crt")
assert_no_file "$WORK/deploy.log" "the deploy hook after the first enrollment"

note "renew: a new key through the hand-over, the deploy hook"
run_ok renew-a mks_acme renew --label a
id1=$(key_id a)
[ -n "$id1" ] && [ "$id1" != "$id0" ] || fail "renew kept the key (id $id0 -> $id1)"
assert_eq "$(key_id a.old)" "$id0" "the retired key a.old"
assert_eq "$(key_id a.next)" "" "a pending key after the hand-over"
spki_from_token a "$WORK/a.pub.pem"
run_ok a-cert-pub plain_ossl x509 -in "$WORK/a.crt" -noout -pubkey -out "$WORK/a.cert-pub.pem"
assert_same_file "$WORK/a.cert-pub.pem" "$WORK/a.pub.pem" "--cert-out is not for the new key"
assert_grep "$WORK/deploy.log" "^a $WORK/a.crt $WORK/a.key.pem\$" "the deploy hook's environment"
assert_chains_to_pebble "$WORK/a.crt" "the renewed certificate"

note "renew --same-key: the certificate only"
serial1=$(serial_of "$WORK/a.crt")
run_ok renew-same mks_acme renew --label a --same-key
assert_eq "$(key_id a)" "$id1" "--same-key changed the key"
[ "$(serial_of "$WORK/a.crt")" != "$serial1" ] || fail "--same-key did not change the certificate"
[ "$serial0" != "$serial1" ] || fail "the first renewal did not change the certificate"

note "check --renew: by default nothing fresh is due"
run_ok check-default mks_acme check --renew
assert_grep "$WORK/check-default.out" '^not-due +a ' "a is due by default"
assert_grep "$WORK/check-default.out" '1 enrollment, 0 renewed, 0 failed' "the summary"

note "check --renew renews exactly the certificate that is due"
sleep 4 # b's notAfter comes seconds after a's
acme_enroll b --deploy-hook "$WORK/deploy-hook"
ida=$(key_id a) idb=$(key_id b)
na=$(date -d "$(plain_ossl x509 -in "$WORK/a.crt" -noout -enddate | sed 's/^notAfter=//')" +%s)
nb=$(date -d "$(plain_ossl x509 -in "$WORK/b.crt" -noout -enddate | sed 's/^notAfter=//')" +%s)
[ "$nb" -ge $((na + 3)) ] || fail "b's certificate does not end 3 s after a's ($na, $nb)"
# Between the two: a has less left than that, b more.
before=$(((na + nb) / 2 - $(date +%s)))
: >"$WORK/deploy.log"
run_ok check-due mks_acme check --renew --renew-before "${before}s" --json
assert_grep "$WORK/check-due.out" '"label":"a","status":"renewed"' "a was not renewed"
assert_grep "$WORK/check-due.out" '"label":"b","status":"not-due"' "b was renewed although not due"
assert_grep "$WORK/check-due.out" '^\{"ok":true,' "the JSON document"
[ "$(key_id a)" != "$ida" ] || fail "check --renew kept a's key"
assert_eq "$(key_id b)" "$idb" "b's key"
assert_eq "$(cut -d' ' -f1 "$WORK/deploy.log" | tr '\n' ' ')" "a " "deploy hooks run"

note "usage errors"
run_rc before-bad 2 mks_acme check --renew --renew-before 40x
assert_grep "$WORK/before-bad.err" "--renew-before '40x'" "no word on the bad value"

note "a failing deploy hook fails the run; the certificate is in place"
: >"$WORK/hook-fails"
serial_b=$(serial_of "$WORK/b.crt")
run_rc check-hook 1 mks_acme check --renew --renew-before 100% --label b --json
assert_grep "$WORK/check-hook.out" '"label":"b","status":"renewed",.*"error":"the deploy hook failed' "the hook's failure is not reported"
[ "$(serial_of "$WORK/b.crt")" != "$serial_b" ] || fail "b's certificate is not in place"
rm "$WORK/hook-fails"

note "revoke"
cp "$WORK/b.crt" "$WORK/b.revoked.crt"
run_ok revoke-b mks_acme revoke --label b --reason keyCompromise
assert_grep "$WORK/revoke-b.out" "^revoked: +'b', serial" "revoke did not say so"
acme_cert_status "$WORK/b.revoked.crt" >"$WORK/status.json"
assert_grep "$WORK/status.json" '"Status": *"Revoked"' "pebble does not show the certificate revoked"
assert_grep "$WORK/status.json" '"Reason": *1' "the reason is not keyCompromise (1)"
run_rc revoke-reason 2 mks_acme revoke --label b --reason bored
run_ok check-revoked mks_acme check --renew --json
assert_grep "$WORK/check-revoked.out" '"label":"b","status":"renewed","due_because":"revoked"' "the revoked certificate was not replaced"
assert_no_grep "$ACME_STATE/b.json" 'revoked_serial' "the state still says revoked"
acme_cert_status "$WORK/b.crt" >"$WORK/status2.json"
assert_grep "$WORK/status2.json" '"Status": *"Valid"' "the replacement is not valid"
note "ok"
