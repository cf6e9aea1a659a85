#!/usr/bin/env bash
# nginx.sh root|unprivileged
#
# nginx 1.22 (Debian's package) with a master and 2 worker processes serves
# mutual TLS with its private key in the token: `ssl_certificate_key` names
# the key-reference file, `ssl_verify_client on` requires a certificate from
# the test CA, and OPENSSL_CONF reaches the master and the workers through
# `env OPENSSL_CONF;`. The master loads the key (and logs in) before it forks
# the workers; each worker finds the token again on its first handshake.
# SoftHSM runs with `library.reset_on_fork = true`, so a worker starts from a
# blank module as it would with a hardware token.
#
# Clients: 200 curl processes (half TLS 1.3, half TLS 1.2, 4 at a time) and
# one Python process making 20 connections, every one with its key in the
# token through a key-reference file. 0 failures allowed. The access log
# (with $pid) shows that both workers served, 220 requests with a verified
# client certificate. A client without a certificate gets 400 "No required
# SSL certificate was sent", one from another CA 400 "The SSL certificate
# error". nginx is stopped by its master's PID; no worker may have crashed
# (SoftHSM must survive the workers' exit).
#
# root:          workers run as root (`user root;`), as when the whole
#                service is trusted with the token.
# unprivileged:  workers run as nobody:nogroup. The token directory is
#                group-readable by nogroup and nothing else changes: the PIN
#                file stays 0600 root, because the master reads it (as root)
#                when it loads the key and the workers log in again with the
#                PIN the keystore kept. This is the README's non-root setup.
#                Needs root (nginx only switches users when started as root).
. "$(dirname "$0")/../lib/common.sh"

MODE=${1:?usage: nginx.sh root|unprivileged}
case $MODE in
root | unprivileged) ;;
*) fail "unknown mode $MODE" ;;
esac

NGINX=${MTLSKS_NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
[ -x "$NGINX" ] || skip "nginx is not installed (Debian package nginx or nginx-light)"
require_cmd curl python3
"$NGINX" -V 2>&1 | grep -q 'with-http_ssl_module' || skip "$NGINX has no http_ssl_module"
curl --version | head -n1 | grep -q 'OpenSSL/3\.' || skip "curl is not built with OpenSSL 3"
if [ "$MODE" = unprivileged ]; then
    [ "$(id -u)" -eq 0 ] || skip "the unprivileged-worker case needs root (nginx switches users only as root)"
    getent passwd nobody >/dev/null && getent group nogroup >/dev/null ||
        skip "no user nobody / group nogroup"
fi
setup_test

# The server's token and the clients' token live in separate SoftHSM token
# directories, as on separate machines. (It also keeps clear of a SoftHSM
# 2.6.1 race: its file store rewrites token.object at every C_Login, and
# another process reading the token at that moment gets CKR_GENERAL_ERROR or
# a blank token label; so the clients run one at a time.)
new_token web
# A forked worker must find the module blank, as with a hardware token.
echo "library.reset_on_fork = true" >>"$SOFTHSM2_CONF"
SRV_SOFTHSM2_CONF=$WORK/softhsm2-server.conf
mv "$SOFTHSM2_CONF" "$SRV_SOFTHSM2_CONF"
export SOFTHSM2_CONF=$SRV_SOFTHSM2_CONF
enroll srv ec:P-256 server
ca_sign "$WORK/srv.csr" "$WORK/srv.pem"

CLI_SOFTHSM2_CONF=$WORK/softhsm2-client.conf
mkdir -p "$WORK/client-tokens"
_write_softhsm_conf "$CLI_SOFTHSM2_CONF" "$WORK/client-tokens"
export SOFTHSM2_CONF=$CLI_SOFTHSM2_CONF
add_token client
TOKEN_LABEL=client
enroll cli ec:P-256 client
ca_sign "$WORK/cli.csr" "$WORK/cli.pem"
software_client rogue rogue

NGX=$WORK/nginx
mkdir -p "$NGX"
if [ "$MODE" = unprivileged ]; then
    # What the README says to do for a service user: the token directory
    # (and the SoftHSM configuration that names it) group-readable by the
    # workers' group, every directory on the way traversable. The PIN file
    # stays 0600 root: only the master reads it.
    chgrp nogroup "$WORK" "$SRV_SOFTHSM2_CONF" "$TOKEN_CNF"
    chmod 0750 "$WORK"
    chmod 0640 "$SRV_SOFTHSM2_CONF" "$TOKEN_CNF"
    chgrp -R nogroup "$WORK/tokens"
    chmod -R g+rX "$WORK/tokens"
    d=$(dirname "$WORK")
    while [ "$d" != / ]; do
        [ "$(($(stat -c '%#a' "$d") & 01))" -ne 0 ] || fail "$d is not traversable by nobody"
        d=$(dirname "$d")
    done
    [ "$(stat -c '%a %U' "$PIN_FILE")" = "600 root" ] || fail "pin file is not 0600 root"
    USER_LINE="user nobody nogroup;"
    WORKER_USER=nobody
elif [ "$(id -u)" -eq 0 ]; then
    USER_LINE="user root;"
    WORKER_USER=root
else
    USER_LINE="# not root: the workers run as $(id -un)"
    WORKER_USER=$(id -un)
fi

# free_port: a TCP port on 127.0.0.1 that nothing listens on right now.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

write_nginx_conf() {
    cat >"$NGX/nginx.conf" <<EOF
# nginx.sh ($MODE): two workers, key in the token, client certificates required.
daemon off;
master_process on;
worker_processes 2;
$USER_LINE
pid $NGX/nginx.pid;
error_log $NGX/error.log info;
# nginx clears the environment of its workers: keep what OpenSSL and the
# PKCS#11 module read.
env OPENSSL_CONF;
env SOFTHSM2_CONF;

events {
    worker_connections 64;
}

http {
    log_format mtls '\$pid \$status \$ssl_protocol \$ssl_client_verify "\$ssl_client_s_dn" \$request_uri';
    access_log $NGX/access.log mtls;
    client_body_temp_path $NGX/client_body;
    proxy_temp_path $NGX/proxy;
    fastcgi_temp_path $NGX/fastcgi;
    uwsgi_temp_path $NGX/uwsgi;
    scgi_temp_path $NGX/scgi;

    server {
        listen 127.0.0.1:$PORT ssl;
        server_name localhost;
        ssl_certificate $WORK/srv.pem;
        ssl_certificate_key $WORK/srv.key.pem;
        ssl_client_certificate $MTLSKS_FIXTURE/ca.pem;
        ssl_verify_client on;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {
            default_type text/plain;
            return 200 "hello \$ssl_client_s_dn (\$ssl_client_verify, \$ssl_protocol, worker \$pid)\n";
        }
    }
}
EOF
}

# /proc/PID/stat's ppid field; the process name may hold spaces and parens.
ppid_of() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    # shellcheck disable=SC2086 # split the fields
    set -- $stat
    echo "$2"
}
children_of() {
    local f pid
    for f in /proc/[0-9]*; do
        pid=${f#/proc/}
        [ "$(ppid_of "$pid" 2>/dev/null)" = "$1" ] && echo "$pid"
    done
    return 0
}

NGINX_MASTER=
NGINX_WRAPPER=
WORKERS=()
# stop_nginx: QUIT to the master (graceful: workers finish and exit through
# their atexit handlers, where SoftHSM 2.6.1 likes to crash), by its PID;
# TERM/KILL to what is left after 20 s, by PID.
stop_nginx() {
    local pid
    [ -n "$NGINX_MASTER" ] || return 0
    if kill -0 "$NGINX_MASTER" 2>/dev/null; then
        kill -QUIT "$NGINX_MASTER" 2>/dev/null || true
        for _ in $(seq 200); do
            kill -0 "$NGINX_MASTER" 2>/dev/null || break
            sleep 0.1
        done
    fi
    for pid in "$NGINX_MASTER" "${WORKERS[@]}"; do
        stop_pid "$pid"
    done
    [ -z "$NGINX_WRAPPER" ] || wait "$NGINX_WRAPPER" 2>/dev/null || true
    NGINX_MASTER=
}
trap 'rc=$?; stop_nginx; (exit $rc); _cleanup' EXIT

# start_nginx: on a free port (a port taken between free_port and nginx's
# bind is retried with another); sets PORT, NGINX_MASTER, WORKERS.
start_nginx() {
    local try
    for try in 1 2 3 4 5; do
        PORT=$(free_port)
        write_nginx_conf
        rm -f "$NGX/nginx.pid"
        : >"$NGX/error.log"
        # timeout: nginx never outlives the test, whatever happens to it.
        OPENSSL_CONF=$TOKEN_CNF SOFTHSM2_CONF=$SRV_SOFTHSM2_CONF timeout 240 "$NGINX" -p "$NGX" -c "$NGX/nginx.conf" \
            -e "$NGX/error.log" </dev/null >"$NGX/stdout.log" 2>&1 &
        NGINX_WRAPPER=$!
        for _ in $(seq 200); do
            [ -s "$NGX/nginx.pid" ] && break
            kill -0 "$NGINX_WRAPPER" 2>/dev/null || break
            sleep 0.1
        done
        if [ -s "$NGX/nginx.pid" ]; then
            NGINX_MASTER=$(cat "$NGX/nginx.pid")
            [ "$(ppid_of "$NGINX_MASTER")" = "$NGINX_WRAPPER" ] ||
                fail "pid file names $NGINX_MASTER, which is not the nginx we started"
            break
        fi
        wait "$NGINX_WRAPPER" 2>/dev/null || true
        if grep -q 'Address already in use' "$NGX/error.log" "$NGX/stdout.log"; then
            note "port $PORT was taken; trying another"
            continue
        fi
        sed 's/^/    nginx| /' "$NGX/stdout.log" "$NGX/error.log" >&2
        fail "nginx did not start"
    done
    [ -n "$NGINX_MASTER" ] || fail "nginx: no free port after 5 tries"
    for _ in $(seq 100); do
        mapfile -t WORKERS < <(children_of "$NGINX_MASTER")
        [ "${#WORKERS[@]}" -ge 2 ] && break
        sleep 0.1
    done
    [ "${#WORKERS[@]}" -eq 2 ] || {
        sed 's/^/    nginx| /' "$NGX/error.log" >&2
        fail "nginx master $NGINX_MASTER has ${#WORKERS[@]} workers, expected 2"
    }
    local w u
    for w in "${WORKERS[@]}"; do
        u=$(stat -c %U "/proc/$w")
        [ "$u" = "$WORKER_USER" ] || fail "worker $w runs as $u, expected $WORKER_USER"
    done
    note "nginx master $NGINX_MASTER, workers ${WORKERS[*]} (as $WORKER_USER), port $PORT"
}

start_nginx
URL=https://localhost:$PORT

# One request first, so that a broken setup fails in seconds with nginx's log.
rc=0
OPENSSL_CONF=$TOKEN_CNF curl --silent --show-error --max-time 20 --cacert "$MTLSKS_FIXTURE/ca.pem" \
    --cert "$WORK/cli.pem" --key "$WORK/cli.key.pem" --write-out '%{http_code}\n' "$URL/first" \
    >"$WORK/first.out" 2>"$WORK/first.err" || rc=$?
if [ "$rc" -ne 0 ] || ! grep -q '^200$' "$WORK/first.out"; then
    sed 's/^/    curl| /' "$WORK/first.out" "$WORK/first.err" >&2
    sed 's/^/    nginx| /' "$NGX/error.log" >&2
    fail "the first request failed (curl exit $rc)"
fi
note "first request: $(head -n1 "$WORK/first.out")"

# --- 200 requests from curl: one process (so one full handshake) each ---
CURL_DIR=$WORK/curl
mkdir -p "$CURL_DIR"
curl_one() {
    local i=$1 tls=(--tlsv1.3)
    [ $((i % 2)) -eq 1 ] && tls=(--tlsv1.2 --tls-max 1.2)
    OPENSSL_CONF=$TOKEN_CNF curl --silent --show-error --max-time 60 "${tls[@]}" \
        --cacert "$MTLSKS_FIXTURE/ca.pem" --cert "$WORK/cli.pem" --key "$WORK/cli.key.pem" \
        --write-out '%{http_code}' --output "$CURL_DIR/$i.body" "$URL/curl/$i" \
        >"$CURL_DIR/$i.code" 2>"$CURL_DIR/$i.err" || echo " exit $?" >>"$CURL_DIR/$i.code"
}
t0=$(date +%s.%N)
for i in $(seq 200); do
    curl_one "$i"
done
t1=$(date +%s.%N)
curl_fail=0
for i in $(seq 200); do
    if [ "$(cat "$CURL_DIR/$i.code")" != 200 ] || ! grep -Eq 'CN ?= ?cli.*\(SUCCESS, TLSv1\.[23]' "$CURL_DIR/$i.body"; then
        curl_fail=$((curl_fail + 1))
        if [ "$curl_fail" -le 3 ]; then
            echo "    curl request $i: $(cat "$CURL_DIR/$i.code")" >&2
            sed 's/^/    | /' "$CURL_DIR/$i.err" "$CURL_DIR/$i.body" >&2 2>/dev/null || true
        fi
    fi
done
note "curl: 200 requests, $curl_fail failures, $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s"

# --- 20 requests from Python: one process, a new connection each ---
cat >"$WORK/client.py" <<'PY'
import http.client, ssl, sys

port, ca, cert, key, n = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.load_verify_locations(ca)
ctx.load_cert_chain(cert, key)  # key: the key-reference file
failures = 0
for i in range(n):
    try:
        conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=60)
        conn.request("GET", "/python/%d" % i)
        resp = conn.getresponse()
        body = resp.read().decode()
        conn.close()
        if resp.status != 200 or "SUCCESS" not in body or "CN=cli" not in body.replace(" ", ""):
            raise RuntimeError("status %d: %s" % (resp.status, body.strip()))
    except Exception as e:
        failures += 1
        print("request %d: %r" % (i, e), file=sys.stderr)
print("python: %d requests, %d failures" % (n, failures))
sys.exit(1 if failures else 0)
PY
run_ok python env OPENSSL_CONF="$TOKEN_CNF" python3 "$WORK/client.py" "$PORT" \
    "$MTLSKS_FIXTURE/ca.pem" "$WORK/cli.pem" "$WORK/cli.key.pem" 20
note "$(cat "$WORK/python.out")"

[ "$curl_fail" -eq 0 ] || fail "curl: $curl_fail of 200 requests failed"

# --- clients nginx must turn away, after the handshake (ssl_verify_client on) ---
run_ok no-cert env OPENSSL_CONF="$TOKEN_CNF" curl --silent --show-error --max-time 60 \
    --cacert "$MTLSKS_FIXTURE/ca.pem" --write-out '%{http_code}\n' "$URL/no-cert"
assert_grep "$WORK/no-cert.out" '^400$' "a client without a certificate did not get 400"
assert_grep "$WORK/no-cert.out" 'No required SSL certificate was sent' \
    "a client without a certificate did not get nginx's reason"
run_ok rogue env OPENSSL_CONF="$TOKEN_CNF" curl --silent --show-error --max-time 60 \
    --cacert "$MTLSKS_FIXTURE/ca.pem" --cert "$WORK/rogue.pem" --key "$WORK/rogue.soft.key" \
    --write-out '%{http_code}\n' "$URL/rogue"
assert_grep "$WORK/rogue.out" '^400$' "a client certificate from another CA did not get 400"
assert_grep "$WORK/rogue.out" 'The SSL certificate error' \
    "a client certificate from another CA did not get nginx's reason"
note "no certificate: 400; certificate from another CA: 400"

# --- what the workers logged ---
LOG=$NGX/access.log
served=$(grep -Ec '^[0-9]+ 200 TLSv1\.[23] SUCCESS "[^"]*CN=cli[^"]*" /(curl|python)/' "$LOG" || true)
tls13=$(grep -Ec '^[0-9]+ 200 TLSv1\.3 SUCCESS .* /curl/' "$LOG" || true)
tls12=$(grep -Ec '^[0-9]+ 200 TLSv1\.2 SUCCESS .* /curl/' "$LOG" || true)
assert_eq "$served" 220 "requests served with a verified client certificate (access log)"
assert_eq "$tls13/$tls12" 100/100 "curl requests over TLS 1.3/TLS 1.2"
assert_grep "$LOG" '^[0-9]+ 400 TLSv1\.[23] NONE "-" /no-cert$' "access log: the request without a certificate"
for w in "${WORKERS[@]}"; do
    n=$(grep -Ec "^$w 200 " "$LOG" || true)
    [ "$n" -gt 0 ] || fail "worker $w served no request; access log by pid: $(cut -d' ' -f1 "$LOG" | sort | uniq -c | tr -s ' \n' ' ')"
    note "worker $w served $n requests"
done
others=$(cut -d' ' -f1 "$LOG" | sort -u | grep -Evc "^(${WORKERS[0]}|${WORKERS[1]})$" || true)
assert_eq "$others" 0 "requests served by processes other than the two workers"

# --- stop by the master's PID; nothing crashed ---
master=$NGINX_MASTER
stop_nginx
for pid in "$master" "${WORKERS[@]}"; do
    ! kill -0 "$pid" 2>/dev/null || fail "nginx process $pid still running after QUIT"
done
assert_grep "$NGX/error.log" 'exiting' "nginx did not log its shutdown"
assert_no_grep "$NGX/error.log" 'exited on signal|\[(alert|crit|emerg)\]' "nginx logged a crash or a critical error"
note "nginx ($MODE workers): 220 requests with token keys on both sides, 0 failures"
