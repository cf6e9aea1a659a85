#!/usr/bin/env bash
# nginx.sh root|unprivileged-workers|unprivileged-service|tpm|tpm-tabrmd
#
# nginx 1.22 (Debian's package) with a master and 2 worker processes serves
# mutual TLS with its private key in the token: `ssl_certificate_key` names
# the key-reference file, `ssl_verify_client on` requires a certificate from
# the test CA, and OPENSSL_CONF and SOFTHSM2_CONF reach the master and the
# workers (`env OPENSSL_CONF; env SOFTHSM2_CONF;`: nginx clears its workers'
# environment). The master loads the key (and logs in) before it forks the
# workers; each worker initialises the module again, opens a session, logs in
# with the PIN the keystore kept and finds the key again, once, on its first
# handshake. SoftHSM runs with `library.reset_on_fork = true`, so a worker
# finds the module blank as it would with a hardware token.
#
# Clients: curl processes (half TLS 1.3, half TLS 1.2) and one Python process
# making a new connection per request, every one with its key in the client
# token (a token directory of its own, clients_lib.sh) through a
# key-reference file; 0 failures allowed. The access log
# (with $pid) shows that both workers served and that every request came with
# a verified client certificate; the provider's call trace shows one
# C_Initialize and one C_Login per worker and one C_Sign per handshake. A
# client without a certificate gets 400 "No required SSL certificate was
# sent", one from another CA 400 "The SSL certificate error". nginx is
# stopped by its master's PID; no worker may have crashed (SoftHSM must
# survive the workers' exit).
#
# root                  workers run as root (`user root;`); 200 curl and 20
#                       Python requests.
# unprivileged-workers  master root, workers `user nobody nogroup;`: the token
#                       directory belongs to nobody (SoftHSM rewrites
#                       token.object at every login, so the workers need write
#                       access); the PIN file stays 0600 root, because only the
#                       master reads it. 40 curl, 10 Python requests.
# unprivileged-service  all of nginx runs as nobody:nogroup (started through
#                       setpriv): the master reads the PIN, so the PIN file is
#                       0640 root:nogroup. 40 curl, 10 Python requests.
# The unprivileged modes are the non-root setups of docs/servers-and-clients.md ("Services that do not run as root") and need root.
# tpm                   the server's key in a TPM (a bare swtpm: no resource
#                       manager, three transient object slots), its TSS2 key
#                       file in `ssl_certificate_key`; 4 workers as root, each
#                       its own listening socket (reuseport), so that all of
#                       them serve; 40 curl, 10 Python requests, a reload.
#                       The master loads nothing into the TPM (the public half
#                       is in the file); each worker loads the key for each
#                       signature and flushes it again. Then nginx is
#                       restarted 5 times, stopped by SIGTERM each time, with
#                       10 requests after each start: 0 failures, and no
#                       transient object is left in the TPM afterwards.
# tpm-tabrmd            the same behind tpm2-abrmd (a resource manager on a
#                       private D-Bus session bus): each worker loads the key
#                       once and keeps it, one TPM2_Sign per handshake.
. "$(dirname "$0")/../lib/common.sh"

MODE=${1:?usage: nginx.sh root|unprivileged-workers|unprivileged-service|tpm|tpm-tabrmd}
N_WORKERS=2 TPM=0
case $MODE in
root) N_CURL=200 N_PY=20 ;;
unprivileged-workers | unprivileged-service) N_CURL=40 N_PY=10 ;;
tpm | tpm-tabrmd) N_CURL=40 N_PY=10 N_WORKERS=4 TPM=1 ;;
*) fail "unknown mode $MODE" ;;
esac

NGINX=${MTLSKS_NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
[ -x "$NGINX" ] || skip "nginx is not installed (Debian package nginx or nginx-light)"
require_cmd curl python3
"$NGINX" -V 2>&1 | grep -q 'with-http_ssl_module' || skip "$NGINX has no http_ssl_module"
curl --version | head -n1 | grep -q 'OpenSSL/3\.' || skip "curl is not built with OpenSSL 3"
if [ "$MODE" = unprivileged-workers ] || [ "$MODE" = unprivileged-service ]; then
    [ "$(id -u)" -eq 0 ] || skip "$MODE needs root (to switch to the user nobody)"
    if ! getent passwd nobody >/dev/null || ! getent group nogroup >/dev/null; then
        skip "no user nobody / group nogroup"
    fi
    require_cmd setpriv
fi
if [ "$TPM" = 1 ]; then
    . "$(dirname "$0")/../lib/tpm.sh"
    setup_tpm_test
    require_tpm2_tools
    [ "$MODE" = tpm ] || require_tabrmd
else
    setup_test
fi
. "$(dirname "$0")/clients_lib.sh"

# Server key and client key in separate token directories (clients_lib.sh).
split_tokens
on_server_token
if [ "$TPM" = 1 ]; then
    start_swtpm nginx
    if [ "$MODE" = tpm-tabrmd ]; then
        start_tabrmd "$SWTPM_TCTI"
        use_tpm "$TABRMD_TCTI"
    else
        use_tpm "$SWTPM_TCTI"
    fi
    tpm_enroll srv ec:P-256 server
    tpm_assert_no_transient "$SWTPM_TCTI" "enroll"
else
    enroll srv ec:P-256 server
fi
ca_sign "$WORK/srv.csr" "$WORK/srv.pem"
on_client_token
enroll cli ec:P-256 client
ca_sign "$WORK/cli.csr" "$WORK/cli.pem"
software_client rogue rogue

NGX=$WORK/nginx
mkdir -p "$NGX"
RUN_AS=()
case $MODE in
root | tpm | tpm-tabrmd)
    if [ "$(id -u)" -eq 0 ]; then
        USER_LINE="user root;"
    else
        USER_LINE="# not root: master and workers run as $(id -un)"
    fi
    WORKER_USER=$(id -un)
    ;;
unprivileged-*)
    # The setup for a service user in docs/servers-and-clients.md: the token directory belongs to
    # it; what it must read (SoftHSM's configuration, openssl.cnf, the
    # certificates) is readable by its group, and every directory on the way
    # is traversable.
    chown -R nobody:nogroup "$WORK/tokens"
    chgrp nogroup "$WORK" "$SRV_SOFTHSM2_CONF" "$TOKEN_CNF"
    chmod 0750 "$WORK"
    chmod 0640 "$SRV_SOFTHSM2_CONF" "$TOKEN_CNF"
    d=$(dirname "$WORK")
    while [ "$d" != / ]; do
        [ "$(($(stat -c '%#a' "$d") & 01))" -ne 0 ] || skip "$d is not traversable by nobody"
        d=$(dirname "$d")
    done
    WORKER_USER=nobody
    ;;
esac
case $MODE in
unprivileged-workers)
    # Only the master (root) reads the PIN file and the key reference.
    USER_LINE="user nobody nogroup;"
    [ "$(stat -c '%a %U' "$PIN_FILE")" = "600 root" ] || fail "pin file is not 0600 root"
    ;;
unprivileged-service)
    # The master runs as nobody too: it reads the PIN file, the key
    # reference and the certificate, and writes its logs and pid file.
    USER_LINE="# started as nobody:nogroup"
    chgrp nogroup "$PIN_FILE" "$WORK/srv.key.pem" "$WORK/srv.pem"
    chmod 0640 "$PIN_FILE" "$WORK/srv.key.pem" "$WORK/srv.pem"
    chown nobody:nogroup "$NGX"
    RUN_AS=(setpriv --reuid=nobody --regid=nogroup --clear-groups)
    ;;
esac

write_nginx_conf() {
    cat >"$NGX/nginx.conf" <<EOF
# nginx.sh ($MODE): two workers, key in the token, client certificates required.
daemon off;
master_process on;
worker_processes $N_WORKERS;
$USER_LINE
pid $NGX/nginx.pid;
error_log $NGX/error.log info;
# nginx clears the environment of its workers: keep what OpenSSL and the
# PKCS#11 module read.
env OPENSSL_CONF;
env SOFTHSM2_CONF;
env TSS2_LOG;
env DBUS_SESSION_BUS_ADDRESS;

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
        listen 127.0.0.1:$PORT ssl$LISTEN_OPTS;
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

# With more workers than two, each gets its own listening socket, so that
# the kernel spreads the connections over all of them.
LISTEN_OPTS=
[ "$N_WORKERS" -le 2 ] || LISTEN_OPTS=" reuseport"

NGINX_MASTER=
NGINX_WRAPPER=
WORKERS=()
# stop_nginx [SIGNAL]: QUIT (or SIGNAL) to the master by its PID (QUIT is
# graceful: the workers finish and exit through their atexit handlers, where
# SoftHSM 2.6.1 likes to crash; TERM is a fast shutdown); TERM, then KILL to
# whatever is left after 20 s, by PID.
stop_nginx() {
    local pid sig=${1:-QUIT}
    [ -n "$NGINX_MASTER" ] || return 0
    if kill -0 "$NGINX_MASTER" 2>/dev/null; then
        kill "-$sig" "$NGINX_MASTER" 2>/dev/null || true
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
# set +e: the trap must go on to _cleanup (which exits with $?) whatever failed.
trap 'rc=$?; set +e; stop_nginx; (exit $rc); _cleanup' EXIT

# start_nginx: on a free port (a port taken between free_port and nginx's
# bind is retried with another); sets PORT, NGINX_MASTER, WORKERS. The
# provider traces its PKCS#11 calls (MTLSKS_DEBUG=1): the master's to
# master.log (its stderr while it reads the configuration), the workers' to
# error.log (nginx points its stderr there).
start_nginx() {
    for _ in 1 2 3 4 5; do
        PORT=$(free_port)
        write_nginx_conf
        rm -f "$NGX/nginx.pid"
        : >"$NGX/error.log"
        : >"$NGX/master.log"
        [ "$MODE" != unprivileged-service ] || chown nobody:nogroup "$NGX/error.log" "$NGX/master.log"
        # timeout: nginx never outlives the test, whatever happens to it.
        MTLSKS_DEBUG=1 OPENSSL_CONF=$TOKEN_CNF SOFTHSM2_CONF=$SRV_SOFTHSM2_CONF timeout 240 \
            "${RUN_AS[@]}" "$NGINX" -p "$NGX" -c "$NGX/nginx.conf" -e "$NGX/error.log" \
            </dev/null >"$NGX/master.log" 2>&1 &
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
        if grep -q 'Address already in use' "$NGX/error.log" "$NGX/master.log"; then
            note "port $PORT was taken; trying another"
            continue
        fi
        sed 's/^/    nginx| /' "$NGX/master.log" "$NGX/error.log" >&2
        fail "nginx did not start"
    done
    [ -n "$NGINX_MASTER" ] || fail "nginx: no free port after 5 tries"
    for _ in $(seq 100); do
        mapfile -t WORKERS < <(children_of "$NGINX_MASTER")
        [ "${#WORKERS[@]}" -ge "$N_WORKERS" ] && break
        sleep 0.1
    done
    [ "${#WORKERS[@]}" -eq "$N_WORKERS" ] || {
        sed 's/^/    nginx| /' "$NGX/error.log" >&2
        fail "nginx master $NGINX_MASTER has ${#WORKERS[@]} workers, expected $N_WORKERS"
    }
    local w u
    for w in "${WORKERS[@]}"; do
        u=$(stat -c %U "/proc/$w")
        [ "$u" = "$WORKER_USER" ] || fail "worker $w runs as $u, expected $WORKER_USER"
    done
    note "nginx master $NGINX_MASTER (as $(stat -c %U "/proc/$NGINX_MASTER")), workers ${WORKERS[*]} (as $WORKER_USER), port $PORT"
}

start_nginx
URL=https://localhost:$PORT
if [ "$TPM" = 1 ]; then
    note "transient objects in the TPM after the master loaded the key: $(tpm_transient_count "$SWTPM_TCTI")"
else
    assert_grep "$NGX/master.log" '^mtlsks: C_Login -> CKR_OK$' "the master did not log in to load the key"
fi

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

# --- curl: one process (so one full handshake) per request ---
CURL_DIR=$WORK/curl
mkdir -p "$CURL_DIR"
curl_one() {
    local i=$1 tls=(--tlsv1.3)
    [ $((${i##*-} % 2)) -eq 1 ] && tls=(--tlsv1.2 --tls-max 1.2)
    OPENSSL_CONF=$TOKEN_CNF curl --silent --show-error --max-time 60 "${tls[@]}" \
        --cacert "$MTLSKS_FIXTURE/ca.pem" --cert "$WORK/cli.pem" --key "$WORK/cli.key.pem" \
        --write-out '%{http_code}' --output "$CURL_DIR/$i.body" "$URL/curl/$i" \
        >"$CURL_DIR/$i.code" 2>"$CURL_DIR/$i.err" || echo " exit $?" >>"$CURL_DIR/$i.code"
}
t0=$(date +%s.%N)
for i in $(seq "$N_CURL"); do
    curl_one "$i"
done
t1=$(date +%s.%N)
curl_fail=0
for i in $(seq "$N_CURL"); do
    if [ "$(cat "$CURL_DIR/$i.code")" != 200 ] ||
        ! grep -Eq 'CN=cli.*\(SUCCESS, TLSv1\.[23]' "$CURL_DIR/$i.body" 2>/dev/null; then
        curl_fail=$((curl_fail + 1))
        if [ "$curl_fail" -le 3 ]; then
            echo "    curl request $i: $(cat "$CURL_DIR/$i.code")" >&2
            sed 's/^/    | /' "$CURL_DIR/$i.err" "$CURL_DIR/$i.body" >&2 2>/dev/null || true
        fi
    fi
done
note "curl: $N_CURL requests, $curl_fail failures, $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s"

# --- Python: one process, a new connection (a full handshake) per request ---
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
        if resp.status != 200 or "(SUCCESS, TLSv1.3" not in body or "CN=cli" not in body:
            raise RuntimeError("status %d: %s" % (resp.status, body.strip()))
    except Exception as e:
        failures += 1
        print("request %d: %r" % (i, e), file=sys.stderr)
print("python: %d requests, %d failures" % (n, failures))
sys.exit(1 if failures else 0)
PY
run_ok python env OPENSSL_CONF="$TOKEN_CNF" python3 "$WORK/client.py" "$PORT" \
    "$MTLSKS_FIXTURE/ca.pem" "$WORK/cli.pem" "$WORK/cli.key.pem" "$N_PY"
note "$(cat "$WORK/python.out")"

[ "$curl_fail" -eq 0 ] || fail "curl: $curl_fail of $N_CURL requests failed"

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

# --- reload: the master loads the key again, new workers log in again ---
# reload_nginx: SIGHUP to the master, by its PID; waits for N_WORKERS new
# workers and sends N_RELOAD requests.
reload_nginx() {
    local fresh=0 w i reload_fail=0
    kill -HUP "$NGINX_MASTER"
    for _ in $(seq 150); do
        mapfile -t WORKERS < <(children_of "$NGINX_MASTER")
        fresh=0
        for w in "${WORKERS[@]}"; do
            [[ " ${OLD_WORKERS[*]} " == *" $w "* ]] || fresh=$((fresh + 1))
        done
        [ "$fresh" -eq "$N_WORKERS" ] && [ "${#WORKERS[@]}" -eq "$N_WORKERS" ] && break
        sleep 0.1
    done
    if [ "$fresh" -ne "$N_WORKERS" ] || [ "${#WORKERS[@]}" -ne "$N_WORKERS" ]; then
        sed 's/^/    nginx| /' "$NGX/error.log" >&2
        fail "after SIGHUP: workers ${WORKERS[*]}, expected $N_WORKERS new ones (old: ${OLD_WORKERS[*]})"
    fi
    N_RELOAD=10
    for i in $(seq "$N_RELOAD"); do
        curl_one "reload-$i"
        if [ "$(cat "$CURL_DIR/reload-$i.code")" != 200 ]; then
            reload_fail=$((reload_fail + 1))
            sed 's/^/    | /' "$CURL_DIR/reload-$i.err" >&2
        fi
    done
    [ "$reload_fail" -eq 0 ] || fail "after the reload: $reload_fail of $N_RELOAD requests failed"
    note "reload (SIGHUP): new workers ${WORKERS[*]}, $N_RELOAD requests, 0 failures"
}
cp "$NGX/error.log" "$NGX/error-before-reload.log"
OLD_WORKERS=("${WORKERS[@]}")
N_RELOAD=0
if [ "$TPM" = 1 ]; then
    note "transient objects in the TPM while nginx runs: $(tpm_transient_count "$SWTPM_TCTI")"
fi
reload_nginx

# --- stop by the master's PID; nothing crashed ---
master=$NGINX_MASTER
stop_nginx
for pid in "$master" "${OLD_WORKERS[@]}" "${WORKERS[@]}"; do
    ! kill -0 "$pid" 2>/dev/null || fail "nginx process $pid still running after QUIT"
done
assert_grep "$NGX/error.log" 'exiting' "nginx did not log its shutdown"
assert_no_grep "$NGX/error.log" 'exited on signal|\[(alert|crit|emerg)\]' \
    "nginx logged a crash or a critical error"

# --- what the workers logged ---
LOG=$NGX/access.log
grep -v ' /curl/reload-' "$LOG" >"$NGX/access-before-reload.log" || true
total=$((N_CURL + N_PY))
served=$(grep -Ec '^[0-9]+ 200 TLSv1\.[23] SUCCESS "CN=cli[^"]*" /(curl/[0-9]|python/)' "$LOG" || true)
tls13=$(grep -Ec '^[0-9]+ 200 TLSv1\.3 SUCCESS .* /curl/[0-9]' "$LOG" || true)
tls12=$(grep -Ec '^[0-9]+ 200 TLSv1\.2 SUCCESS .* /curl/[0-9]' "$LOG" || true)
assert_eq "$served" "$total" "requests served with a verified client certificate (access log)"
assert_eq "$tls13/$tls12" "$((N_CURL / 2))/$((N_CURL / 2))" "curl requests over TLS 1.3/TLS 1.2"
assert_grep "$LOG" '^[0-9]+ 400 TLSv1\.[23] NONE "-" /no-cert$' "access log: the request without a certificate"
assert_grep "$LOG" '^[0-9]+ 400 TLSv1\.[23] FAILED:.* /rogue$' "access log: the request from another CA"
for w in "${OLD_WORKERS[@]}"; do
    n=$(grep -Ec "^$w 200 " "$LOG" || true)
    [ "$n" -gt 0 ] || fail "worker $w served no request; requests by pid: $(cut -d' ' -f1 "$LOG" | sort | uniq -c | tr -s ' \n' ' ')"
    note "worker $w served $n requests"
done
old_re=$(IFS='|' && echo "${OLD_WORKERS[*]}")
new_re=$(IFS='|' && echo "${WORKERS[*]}")
others=$(cut -d' ' -f1 "$NGX/access-before-reload.log" | sort -u | grep -Evc "^($old_re)$" || true)
assert_eq "$others" 0 "requests served by processes other than the $N_WORKERS workers"
after=$(grep -Ec "^($new_re) 200 TLSv1\.[23] SUCCESS .* /curl/reload-" "$LOG" || true)
assert_eq "$after" "$N_RELOAD" "requests after the reload served by the new workers"

if [ "$TPM" = 1 ]; then
    tpm_assert_no_transient "$SWTPM_TCTI" "nginx stopped"
    # Restarts, the way a service manager stops nginx: SIGTERM to the master
    # (a fast shutdown), then a new nginx on the same TPM.
    N_RESTARTS=5 N_PER_START=10
    restart_fail=0 left=()
    for r in $(seq "$N_RESTARTS"); do
        start_nginx
        URL=https://localhost:$PORT
        for i in $(seq "$N_PER_START"); do
            curl_one "restart$r-$i"
            if [ "$(cat "$CURL_DIR/restart$r-$i.code")" != 200 ]; then
                restart_fail=$((restart_fail + 1))
                sed 's/^/    | /' "$CURL_DIR/restart$r-$i.err" >&2
            fi
        done
        stop_nginx TERM
        assert_no_grep "$NGX/error.log" 'exited on signal|\[(alert|crit|emerg)\]' \
            "restart $r: nginx logged a crash or a critical error"
        left+=("$(tpm_transient_count "$SWTPM_TCTI")")
    done
    note "transient objects left after each of $N_RESTARTS restarts (SIGTERM): ${left[*]}"
    assert_eq "$restart_fail" 0 "failed requests in $N_RESTARTS restarts ($N_PER_START each)"
    tpm_assert_no_transient "$SWTPM_TCTI" "nginx restarted $N_RESTARTS times"
    note "no transient object left in the TPM"
    note "nginx ($MODE, $N_WORKERS workers): $((total + N_RELOAD)) requests and a reload, $N_RESTARTS restarts with $N_PER_START requests each, server key in the TPM, client keys in a token, 0 failures"
    exit 0
fi

# --- what the workers asked of the token (the provider's trace) ---
# Each worker: the module initialised and the login redone once, at its first
# handshake; then one signature per handshake from its session pool.
# Handshakes: every request in the access log (one connection each).
calls() { grep -c "^mtlsks: $2 -> CKR_OK\$" "$1" || true; }
if grep -E '^mtlsks: C_[A-Za-z]+ -> ' "$NGX/error.log" | grep -v ' -> CKR_OK$' >"$WORK/p11-errors"; then
    sed 's/^/    | /' "$WORK/p11-errors" >&2
    fail "a PKCS#11 call in nginx failed"
fi
E1=$NGX/error-before-reload.log
handshakes=$(grep -c . "$NGX/access-before-reload.log")
assert_eq "$(calls "$E1" C_Initialize)" 2 "C_Initialize in the workers (one each)"
assert_eq "$(calls "$E1" C_Login)" 2 "C_Login in the workers (one each)"
assert_eq "$(calls "$E1" C_Sign)" "$handshakes" "C_Sign in the workers (one per handshake)"
note "workers: C_Initialize $(calls "$E1" C_Initialize), C_Login $(calls "$E1" C_Login), C_OpenSession $(calls "$E1" C_OpenSession), C_Sign $(calls "$E1" C_Sign) for $handshakes handshakes"
tail -n +"$(($(wc -l <"$E1") + 1))" "$NGX/error.log" >"$NGX/error-after-reload.log"
E2=$NGX/error-after-reload.log
assert_eq "$(calls "$E2" C_Initialize)" 2 "C_Initialize after the reload (one per new worker)"
note "after the reload (master and new workers): C_Initialize $(calls "$E2" C_Initialize), C_Login $(calls "$E2" C_Login), C_Sign $(calls "$E2" C_Sign)"
note "nginx ($MODE): $((total + N_RELOAD)) requests with token keys on both sides, 0 failures"
