#!/usr/bin/env bash
# acme_nginx.sh
#
# nginx serves mutual TLS with an ACME-issued certificate whose key is in a
# token, through 5 unattended renewals (check --renew, as the timer runs
# it), each reloading nginx by its deploy hook, while a client loop (curl,
# its key in its own token, certificate ACME-issued too, trusting only
# pebble's root) keeps making requests: 0 may fail. After each renewal nginx
# serves the new certificate (new serial, new key); the key reference nginx
# reads always names the current key, and the retired one is kept until
# the next hand-over.
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/acme.sh"

setup_test
require_acme
require_cmd curl
. "$(dirname "$0")/clients_lib.sh"
split_tokens
acme_start

note "the client's certificate, in the client token"
on_client_token
ACME_STATE=$WORK/state-client
acme_enroll cli --usage client

note "the server's certificate, in the server token, reloading nginx when renewed"
on_server_token
ACME_STATE=$WORK/state-server
cat >"$WORK/reload" <<EOF
#!/bin/sh
echo "\$MTLSKS_LABEL \$MTLSKS_CERT" >>"$WORK/reload.log"
kill -HUP "\$(cat "$WORK/nginx/nginx.pid")"
EOF
chmod +x "$WORK/reload"
acme_enroll srv --usage server --san DNS:localhost --deploy-hook "$WORK/reload"

PORT=$(free_port)
cat >"$WORK/server.conf" <<EOF
    server {
        listen 127.0.0.1:$PORT ssl;
        ssl_certificate $WORK/srv.crt;
        ssl_certificate_key $WORK/srv.key.pem;
        ssl_client_certificate $ACME_ROOT;
        ssl_verify_client on;
        ssl_verify_depth 3;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {
            default_type text/plain;
            return 200 "ok \$ssl_client_verify \$ssl_client_serial\n";
        }
    }
EOF
acme_nginx_start "$WORK/server.conf"

# served_serial: the serial of the certificate nginx serves now.
served_serial() {
    plain_ossl s_client -connect "127.0.0.1:$PORT" -servername srv.test </dev/null 2>/dev/null |
        plain_ossl x509 -noout -serial 2>/dev/null | sed 's/^serial=//'
}
cert_serial() { plain_ossl x509 -in "$WORK/srv.crt" -noout -serial | sed 's/^serial=//'; }
wait_served() {
    local want=$1
    for _ in $(seq 200); do
        [ "$(served_serial)" = "$want" ] && return 0
        sleep 0.1
    done
    fail "nginx does not serve $want after the reload (serves $(served_serial))"
}
wait_served "$(cert_serial)"

note "the client loop"
(
    export SOFTHSM2_CONF=$CLI_SOFTHSM2_CONF
    while [ ! -e "$WORK/stop" ]; do
        if OPENSSL_CONF=$TOKEN_CNF curl -sS --max-time 30 --resolve "srv.test:$PORT:127.0.0.1" \
            --cacert "$ACME_ROOT" --cert "$WORK/cli.crt" --key "$WORK/cli.key.pem" \
            "https://srv.test:$PORT/" >"$WORK/loop.body" 2>"$WORK/loop.err" &&
            grep -q '^ok SUCCESS ' "$WORK/loop.body"; then
            echo ok
        else
            echo "fail: $(cat "$WORK/loop.err" "$WORK/loop.body" | tr '\n' ' ')"
        fi
    done >"$WORK/loop.log"
) &
LOOP=$!
_SERVER_PIDS+=("$LOOP")
for _ in $(seq 100); do
    [ -s "$WORK/loop.log" ] && break
    sleep 0.1
done

seen=()
for i in 1 2 3 4 5; do
    before=$(cert_serial)
    n0=$(wc -l <"$WORK/loop.log")
    run_ok "renew-$i" mks_acme check --renew --renew-before 100%
    assert_grep "$WORK/renew-$i.out" '1 enrollment, 1 renewed, 0 failed' "renewal $i"
    after=$(cert_serial)
    [ "$after" != "$before" ] || fail "renewal $i did not change the certificate"
    wait_served "$after"
    # Requests go on across every renewal and reload.
    for _ in $(seq 100); do
        [ "$(wc -l <"$WORK/loop.log")" -gt $((n0 + 2)) ] && break
        sleep 0.1
    done
    seen+=("$after")
    note "renewal $i: nginx serves $after; $(grep -c '^ok$' "$WORK/loop.log") requests so far"
done
: >"$WORK/stop"
wait "$LOOP" || true

total=$(wc -l <"$WORK/loop.log")
failed=$(grep -c '^fail' "$WORK/loop.log" || true)
grep '^fail' "$WORK/loop.log" | head -5 | sed 's/^/    /' >&2 || true
assert_eq "$failed" 0 "failed requests of $total"
[ "$total" -ge 20 ] || fail "only $total requests during 5 renewals"
assert_eq "$(wc -l <"$WORK/reload.log")" 5 "deploy hook runs"
assert_eq "$(printf '%s\n' "${seen[@]}" | sort -u | wc -l)" 5 "distinct certificates served"
assert_no_grep "$NGX/error.log" 'exited on signal|\[(alert|emerg)\]' "nginx logged a crash"
run_ok objs p11tool_ --token-label web --login --pin "$TEST_PIN" --list-objects --type privkey
assert_eq "$(grep -cE 'label: *srv(\.old)?$' "$WORK/objs.out")" 2 "srv and srv.old in the token"
note "$total requests, 0 failed, through 5 renewals"
