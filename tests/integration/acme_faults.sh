#!/usr/bin/env bash
# acme_faults.sh SCENARIO
#
# What goes wrong between mtls-keystore and an ACME CA (pebble), one
# scenario per test. Each failure names what happened and what to do; the
# serving key and certificate stay as they were (--cert-out, --key-ref and
# the token's key unchanged); a key made on the way is the one the next
# run continues with (NAME while enrolling, the pending NAME.next while
# renewing), never an unnamed one.
#
# problem     the CA refuses an identifier (domainBlocklist): the problem
#             document's type and detail and the request are shown
# badnonce    pebble rejects half of all good nonces: 10 enrollments succeed
#             (badNonce retried with the fresh nonce)
# unreachable the CA is down at renewal: nothing made, nothing changed; check
#             --renew --json reports the failure; once pebble runs again
#             (and has forgotten the account) the next run re-registers and
#             renews
# tls         the directory's TLS certificate does not verify (no or a wrong
#             --acme-ca-bundle): said so, no key made
# timeout     the CA accepts connections and never answers: --acme-timeout
# restart     pebble restarted in the middle of an order (from the dns-01
#             hook): accountDoesNotExist, re-registered, the order placed
#             again, the certificate issued by the new pebble
# invalid     the TXT record is wrong at renewal: the authorization and the
#             order go invalid, shown with the CA's problem; the pending key
#             stays and the next renewal (hook fixed) certifies that key
# validation  the http-01 responder is not where the CA looks: the CA's
#             connection problem and the hint; the rerun continues with the key
# mismatch    the CA answers with a certificate for another key (a proxy
#             swaps it: pebble cannot): refused, nothing installed
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/acme.sh"

SCENARIO=${1:?usage: acme_faults.sh SCENARIO}
setup_test
require_acme
new_token acme

# The token's private key labels, one a line.
key_labels() {
    p11tool_ --token-label acme --login --pin "$TEST_PIN" --list-objects --type privkey 2>/dev/null |
        sed -n 's/^ *label: *//p' | sort
}

case $SCENARIO in
problem)
    ACME_BLOCKLIST=blocked.test acme_start
    acme_enroll_cmd blk --san DNS:blocked.test
    run_fails problem "${ACME_CMD[@]}"
    assert_grep "$WORK/problem.err" 'placing the order \(POST https://127\.0\.0\.1:[0-9]+/[^ ]+\): HTTP 400: urn:ietf:params:acme:error:rejectedIdentifier: .*blocked\.test' \
        "the problem's type, detail and request are not shown"
    assert_grep "$WORK/problem.err" 'will not issue for this name: change --san' "no hint"
    assert_grep "$WORK/problem.err" "the key 'blk' stays in token 'acme'" "the key left is not named"
    assert_no_file "$ACME_STATE/blk.json" "state after a refused order"
    assert_no_file "$WORK/blk.crt" "--cert-out after a refused order"
    ;;
badnonce)
    ACME_NONCEREJECT=50 acme_start
    retried=0
    for i in $(seq 10); do
        acme_enroll "n$i"
        assert_chains_to_pebble "$WORK/n$i.crt" "enrollment $i"
        r=$(sed -n 's/.*(\([0-9]*\) nonces rejected and retried).*/\1/p' "$WORK/acme-enroll-n$i.out")
        retried=$((retried + r))
    done
    note "$retried nonces rejected and retried in 10 enrollments"
    [ "$retried" -gt 10 ] || fail "pebble rejected only $retried nonces at 50%: badNonce was not exercised"
    ;;
unreachable)
    acme_start
    acme_enroll web
    acme_snapshot web
    key_labels >"$WORK/labels.before"
    acme_stop_pebble
    run_fails renew-down mks_acme renew --label web
    assert_grep "$WORK/renew-down.err" "https://127\.0\.0\.1:[0-9]+/dir: .*(Couldn't connect|Connection refused|Failed to connect).*the CA is not reachable there" \
        "the unreachable CA is not named with what to do"
    assert_acme_unchanged web "after the CA was unreachable"
    key_labels >"$WORK/labels.after"
    assert_same_file "$WORK/labels.after" "$WORK/labels.before" "keys made although the CA was unreachable"
    run_rc check-down 1 mks_acme check --renew --renew-before 100% --json
    assert_grep "$WORK/check-down.out" '"label":"web","status":"failed",.*"error":".*the CA is not reachable there' \
        "check --renew --json does not report the failure"
    acme_restart_pebble
    run_ok check-up mks_acme check --renew --renew-before 100% --json
    assert_grep "$WORK/check-up.out" '"label":"web","status":"renewed"' "the next run did not renew"
    assert_grep "$WORK/check-up.err" 'does not know the account .* registering again' "the forgotten account was not re-registered"
    assert_chains_to_pebble "$WORK/web.crt" "the renewed certificate (new pebble)"
    ;;
tls)
    acme_start
    run_fails tls-system mks_acme enroll --acme "$ACME_DIR" --token acme --label t1 \
        --san DNS:t1.test --http-01 "127.0.0.1:$ACME_HTTP_PORT" --cert-out "$WORK/t1.crt" \
        --key-ref "$WORK/t1.key.pem"
    assert_grep "$WORK/tls-system.err" "$ACME_DIR: .*does not verify against the system's CAs: a private CA needs --acme-ca-bundle FILE" \
        "no word on the TLS failure"
    run_fails tls-wrong mks_acme enroll --acme "$ACME_DIR" --acme-ca-bundle "$MTLSKS_FIXTURE/ca.pem" \
        --token acme --label t1 --san DNS:t1.test --http-01 "127.0.0.1:$ACME_HTTP_PORT" \
        --cert-out "$WORK/t1.crt" --key-ref "$WORK/t1.key.pem"
    assert_grep "$WORK/tls-wrong.err" "does not verify against --acme-ca-bundle" "no word on the wrong bundle"
    assert_eq "$(key_labels | tr '\n' ' ')" "" "keys made although the directory could not be reached"
    ;;
timeout)
    silent_server_start
    run_fails timeout mks_acme enroll --acme "https://127.0.0.1:$SERVER_PORT/dir" --acme-timeout 2 \
        --token acme --label t1 --san DNS:t1.test --http-01 127.0.0.1:1 --cert-out "$WORK/t1.crt" \
        --key-ref "$WORK/t1.key.pem"
    assert_grep "$WORK/timeout.err" 'no answer from the CA within 2 s.*--acme-timeout SECONDS' "no word on the timeout"
    assert_eq "$(key_labels | tr '\n' ' ')" "" "keys made although the CA did not answer"
    ;;
restart)
    acme_start
    acme_dns_hook pause
    ACME_CHAL=(--dns-01-hook "$WORK/dns-hook")
    acme_enroll_cmd mid
    ("${ACME_CMD[@]}" >"$WORK/mid.out" 2>"$WORK/mid.err"; echo $? >"$WORK/mid.rc") &
    bg=$!
    for _ in $(seq 300); do
        [ -e "$WORK/paused" ] && break
        sleep 0.1
    done
    [ -e "$WORK/paused" ] || fail "the dns-01 hook was not called"
    acme_restart_pebble
    : >"$WORK/restarted"
    wait "$bg" || true
    [ "$(cat "$WORK/mid.rc")" = 0 ] || {
        cat "$WORK/mid.err" >&2
        fail "enroll across the restart: exit $(cat "$WORK/mid.rc")"
    }
    assert_grep "$WORK/mid.err" 'does not know the account .* registering again' "the re-registration is not said"
    assert_chains_to_pebble "$WORK/mid.crt" "the certificate from the restarted pebble"
    assert_eq "$(grep -c '^add ' "$WORK/dns-hook.log")" 2 "hook 'add' calls (first order, then the new one)"
    ;;
invalid)
    # Every order validated: a reused authorization would need no TXT record.
    ACME_AUTHZREUSE=0 acme_start
    acme_dns_hook good
    ACME_CHAL=(--dns-01-hook "$WORK/dns-hook")
    acme_enroll dnsx
    acme_snapshot dnsx
    acme_dns_hook bad
    run_fails renew-bad mks_acme renew --label dnsx
    assert_grep "$WORK/renew-bad.err" "the CA could not validate DNS:dnsx\.test \(dns-01, authorization https://[^ ]+ is 'invalid'\): urn:ietf:params:acme:error:[a-zA-Z]+: .*the order https://[^ ]+ is 'invalid' now" \
        "the invalid authorization and order are not shown"
    assert_grep "$WORK/renew-bad.err" 'the --dns-01-hook must publish the TXT record' "no hint"
    assert_grep "$WORK/renew-bad.err" "the new key dnsx\.next stays; the next renew of 'dnsx' continues with it" \
        "the pending key is not named"
    assert_acme_unchanged dnsx "after the invalid order"
    spki_from_token dnsx.next "$WORK/next.pub.pem"
    acme_dns_hook good
    run_ok renew-good mks_acme renew --label dnsx
    assert_grep "$WORK/renew-good.err" "continuing with the pending key 'dnsx\.next'" "the pending key was not reused"
    run_ok new-pub plain_ossl x509 -in "$WORK/dnsx.crt" -noout -pubkey -out "$WORK/new.pub.pem"
    assert_same_file "$WORK/new.pub.pem" "$WORK/next.pub.pem" "the renewed certificate is not for the pending key"
    ;;
validation)
    acme_start
    mapfile -t other < <(free_ports 1)
    ACME_CHAL=(--http-01 "127.0.0.1:${other[0]}")
    acme_enroll_cmd chal
    run_fails chal-bad "${ACME_CMD[@]}"
    assert_grep "$WORK/chal-bad.err" "the CA could not validate DNS:chal\.test \(http-01, .*urn:ietf:params:acme:error:connection: " \
        "the CA's connection problem is not shown"
    assert_grep "$WORK/chal-bad.err" '--http-01 must listen where that reaches' "no hint"
    assert_grep "$WORK/chal-bad.err" "the key 'chal' stays in token 'acme'" "the key left is not named"
    ACME_CHAL=(--http-01 "127.0.0.1:$ACME_HTTP_PORT")
    acme_enroll chal
    assert_grep "$WORK/acme-enroll-chal.err" "continuing with the key 'chal'" "the rerun did not continue with the key"
    ;;
mismatch)
    acme_start
    acme_proxy_start
    acme_enroll other
    ACME_DIR=$ACME_PROXY_DIR acme_enroll web
    acme_snapshot web
    cp "$WORK/other.crt" "$WORK/acme/swap"
    run_fails renew-swap mks_acme renew --label web
    assert_grep "$WORK/renew-swap.err" 'certifies another public key than the key in hardware: refused, nothing installed' \
        "the foreign certificate is not refused"
    assert_acme_unchanged web "after a certificate for another key"
    key_labels | grep -qx web.next || fail "the pending key web.next is gone"
    rm "$WORK/acme/swap"
    run_ok renew-ok mks_acme renew --label web
    assert_grep "$WORK/renew-ok.err" "continuing with the pending key 'web\.next'" "the pending key was not reused"
    ;;
*)
    fail "unknown scenario $SCENARIO"
    ;;
esac
note "ok"
