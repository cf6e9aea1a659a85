#!/usr/bin/env bash
# acme_challenges.sh
#
# The two other ways to answer the CA than the built-in responder:
# - --webroot DIR behind nginx: nginx serves DIR on the port pebble
#   validates http-01 on; enroll writes the key authorization files into
#   DIR/.well-known/acme-challenge/ (the CA fetched them from nginx: its
#   access log shows the GET with 200) and removes them, and the
#   directories it made, afterwards. A .well-known that was there stays.
# - --dns-01-hook CMD: the hook sets the TXT record through
#   pebble-challtestsrv's management API ("CMD add NAME VALUE") and removes
#   it afterwards ("CMD remove NAME VALUE"); with a wildcard SAN, which only
#   dns-01 can validate. The value is base64url(SHA-256(key authorization)).
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/acme.sh"

setup_test
require_acme
new_token acme
acme_start

note "--webroot behind nginx"
mkdir -p "$WORK/www"
cat >"$WORK/server.conf" <<EOF
    server {
        listen 127.0.0.1:$ACME_HTTP_PORT;
        location / { root $WORK/www; }
    }
EOF
acme_nginx_start "$WORK/server.conf" plain
ACME_CHAL=(--webroot "$WORK/www")
acme_enroll web
assert_chains_to_pebble "$WORK/web.crt" "the --webroot certificate"
assert_grep "$NGX/access.log" 'GET /\.well-known/acme-challenge/[A-Za-z0-9_-]+ HTTP/1\.1" 200' \
    "pebble did not fetch the challenge from nginx"
assert_no_file "$WORK/www/.well-known" "the .well-known directory enroll made"
note "a .well-known that exists stays; only the challenge file goes"
mkdir -p "$WORK/www/.well-known/acme-challenge"
echo keep >"$WORK/www/.well-known/other"
acme_enroll web2
assert_file "$WORK/www/.well-known/other" "someone else's file in .well-known"
[ -z "$(ls -A "$WORK/www/.well-known/acme-challenge")" ] || fail "challenge files left in the webroot"

note "--dns-01-hook through challtestsrv, with a wildcard"
acme_dns_hook good
ACME_CHAL=(--dns-01-hook "$WORK/dns-hook")
acme_enroll dns --san 'DNS:*.dns.test'
assert_chains_to_pebble "$WORK/dns.crt" "the dns-01 certificate"
run_ok dns-san plain_ossl x509 -in "$WORK/dns.crt" -noout -ext subjectAltName
assert_grep "$WORK/dns-san.out" 'DNS:\*\.dns\.test' "the certificate lacks the wildcard"
assert_grep "$WORK/dns-san.out" 'DNS:dns\.test' "the certificate lacks dns.test"
assert_grep "$WORK/dns-hook.log" '^add _acme-challenge\.dns\.test [A-Za-z0-9_-]{43}$' "the hook was not asked to add the TXT record"
assert_grep "$WORK/dns-hook.log" '^remove _acme-challenge\.dns\.test [A-Za-z0-9_-]{43}$' "the hook was not asked to remove it"
assert_eq "$(grep -c '^add ' "$WORK/dns-hook.log")" 2 "hook 'add' calls (dns.test and *.dns.test)"

note "a wildcard without dns-01, an IP with dns-01: refused before anything is made"
ACME_CHAL=(--http-01 "127.0.0.1:$ACME_HTTP_PORT")
acme_enroll_cmd wild --san 'DNS:*.wild.test'
run_rc wild-http 2 "${ACME_CMD[@]}"
assert_grep "$WORK/wild-http.err" 'wildcard can only be validated by dns-01' "no reason for the refused wildcard"
ACME_CHAL=(--dns-01-hook "$WORK/dns-hook")
acme_enroll_cmd ipdns --san IP:127.0.0.1
run_rc ip-dns 2 "${ACME_CMD[@]}"
assert_grep "$WORK/ip-dns.err" 'IP address cannot be validated by dns-01' "no reason for IP with dns-01"
run_ok objs p11tool_ --token-label acme --login --pin "$TEST_PIN" --list-objects --type privkey
assert_no_grep "$WORK/objs.out" 'label: *(wild|ipdns)$' "a refused enrollment made a key"
note "ok"
