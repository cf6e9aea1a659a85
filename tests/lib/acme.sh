# shellcheck shell=bash
#
# An ACME CA for the integration tests (tests/integration/acme_*.sh), on top
# of common.sh: Debian's pebble (RFC 8555 test CA) with pebble-challtestsrv as
# its DNS server. Source it after common.sh:
#
#   . "$(dirname "$0")/../lib/common.sh"
#   . "$(dirname "$0")/../lib/acme.sh"
#
# acme_start starts both on free loopback ports, each test its own pair:
# - pebble-challtestsrv answers A queries with 127.0.0.1 (-defaultIPv6 "":
#   no AAAA answers, so pebble never tries ::1) and runs none of its own
#   challenge servers; its management API sets TXT records (dns-01).
# - pebble validates through it (-dnsserver), so every name resolves to
#   127.0.0.1, and validates http-01 on ACME_HTTP_PORT: the port the
#   challenge responder of the test (mtls-keystore --http-01, or nginx for
#   --webroot) listens on. PEBBLE_VA_NOSLEEP=1: no random sleeps before
#   validation. Its TLS certificate is made here, by a CA of the test
#   (ACME_CA_BUNDLE is what clients trust to reach the directory).
# Both are stopped by PID when the test ends (common.sh's cleanup).
#
# Knobs, set before acme_start:
#   ACME_NONCEREJECT  percent of good nonces pebble rejects (pebble's default 5)
#   ACME_AUTHZREUSE   percent of orders that reuse a valid authorization of
#                     the account (pebble's default 50; 0 when a test needs
#                     every order to be validated)
#   ACME_VALIDITY     certificateValidityPeriod in seconds (default: pebble's)
#   ACME_EAB=1        externalAccountBindingRequired, with one key: kid
#                     ACME_EAB_KID, MAC key (base64url) in ACME_EAB_HMAC_FILE
#   ACME_BLOCKLIST    a name pebble refuses to issue for (rejectedIdentifier)
#
# After acme_start:
#   ACME_DIR        the directory URL          ACME_CA_BUNDLE  its TLS CA (PEM)
#   ACME_HTTP_PORT  where pebble validates http-01 (on 127.0.0.1)
#   ACME_MGMT       pebble's management API    ACME_CTS        challtestsrv's
#   ACME_ROOT       pebble's root (PEM, from /roots/0): what issued certificates chain to
#   PEBBLE_PID, CTS_PID

require_acme() {
    command -v pebble >/dev/null 2>&1 || skip "pebble is not installed (Debian package pebble)"
    command -v pebble-challtestsrv >/dev/null 2>&1 ||
        skip "pebble-challtestsrv is not installed (Debian package pebble)"
    require_cmd curl python3
}

# free_ports N: N distinct TCP ports free on 127.0.0.1 right now, one a line.
free_ports() {
    python3 - "$1" <<'PY'
import socket, sys
socks, ports = [], []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
    ports.append(s.getsockname()[1])
for s in socks:
    s.close()
print("\n".join(map(str, ports)))
PY
}

# acme_curl ARGS...: curl to pebble's management API or challtestsrv's (no
# provider loaded, the test CA trusted).
acme_curl() {
    env -u OPENSSL_CONF curl -sS --max-time 20 --cacert "$ACME_CA_BUNDLE" "$@"
}

# The TLS certificate pebble serves its API with, for 127.0.0.1 and localhost.
_acme_tls_cert() {
    local d=$WORK/acme
    mkdir -p "$d"
    run_ok acme-tls-ca plain_ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$d/tls-ca.key" -out "$d/tls-ca.pem" -subj "/CN=ACME directory test CA" -days 2 \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign
    run_ok acme-tls-csr plain_ossl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$d/tls.key" -out "$d/tls.csr" -subj "/CN=localhost"
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$d/tls.ext"
    run_ok acme-tls-sign plain_ossl x509 -req -in "$d/tls.csr" -CA "$d/tls-ca.pem" \
        -CAkey "$d/tls-ca.key" -set_serial 1 -days 2 -extfile "$d/tls.ext" -out "$d/tls.pem"
    ACME_CA_BUNDLE=$d/tls-ca.pem
}

_acme_write_config() {
    local d=$WORK/acme extra=''
    if [ "${ACME_EAB:-0}" = 1 ]; then
        ACME_EAB_KID=kid-test
        ACME_EAB_HMAC=zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W
        ACME_EAB_HMAC_FILE=$d/eab.hmac
        (
            umask 077
            printf '%s\n' "$ACME_EAB_HMAC" >"$ACME_EAB_HMAC_FILE"
        )
        extra+=",\"externalAccountBindingRequired\": true"
        extra+=",\"externalAccountMACKeys\": {\"$ACME_EAB_KID\": \"$ACME_EAB_HMAC\"}"
    else
        extra+=",\"externalAccountBindingRequired\": false"
    fi
    [ -z "${ACME_VALIDITY:-}" ] || extra+=",\"certificateValidityPeriod\": $ACME_VALIDITY"
    [ -z "${ACME_BLOCKLIST:-}" ] || extra+=",\"domainBlocklist\": [\"$ACME_BLOCKLIST\"]"
    cat >"$d/pebble.json" <<EOF
{"pebble": {
  "listenAddress": "127.0.0.1:$_ACME_PORT",
  "managementListenAddress": "127.0.0.1:$_ACME_MGMT_PORT",
  "certificate": "$d/tls.pem",
  "privateKey": "$d/tls.key",
  "httpPort": $ACME_HTTP_PORT,
  "tlsPort": $_ACME_TLS_PORT,
  "ocspResponderURL": ""$extra
}}
EOF
}

# _acme_wait_log LOG PATTERN PID WHAT: waits (20 s) until LOG has PATTERN; 1
# when PID exits first or time runs out.
_acme_wait_log() {
    local log=$1 pattern=$2 pid=$3
    for _ in $(seq 200); do
        grep -q -- "$pattern" "$log" 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

_acme_start_cts() {
    local d=$WORK/acme log
    log=$d/challtestsrv.log
    : >"$log"
    timeout 900 pebble-challtestsrv -defaultIPv4 127.0.0.1 -defaultIPv6 "" \
        -dns01 "127.0.0.1:$_ACME_DNS_PORT" -http01 "" -https01 "" -tlsalpn01 "" \
        -management "127.0.0.1:$_ACME_CTS_PORT" </dev/null >"$log" 2>&1 &
    CTS_PID=$!
    _SERVER_PIDS+=("$CTS_PID")
    if _acme_wait_log "$log" "Starting management server" "$CTS_PID" &&
        _acme_wait_log "$log" "DNS-01 challenge server on" "$CTS_PID"; then
        # The log line comes before the sockets are bound: wait for the API.
        for _ in $(seq 100); do
            curl -s -o /dev/null "http://127.0.0.1:$_ACME_CTS_PORT/" && return 0
            kill -0 "$CTS_PID" 2>/dev/null || break
            sleep 0.05
        done
    fi
    stop_pid "$CTS_PID"
    return 1
}

# _acme_start_pebble: pebble with the config written; 1 when it did not come up.
_acme_start_pebble() {
    local d=$WORK/acme log
    log=$d/pebble.log
    : >"$log"
    PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=${ACME_NONCEREJECT:-5} \
        PEBBLE_AUTHZREUSE=${ACME_AUTHZREUSE:-50} \
        timeout 900 pebble -config "$d/pebble.json" -dnsserver "127.0.0.1:$_ACME_DNS_PORT" \
        </dev/null >>"$log" 2>&1 &
    PEBBLE_PID=$!
    _SERVER_PIDS+=("$PEBBLE_PID")
    if _acme_wait_log "$log" "ACME directory available" "$PEBBLE_PID" &&
        acme_curl -o /dev/null "$ACME_DIR"; then
        return 0
    fi
    stop_pid "$PEBBLE_PID"
    return 1
}

# acme_start: pebble-challtestsrv and pebble on free ports (see above). Ports
# are probed, then bound: another process may take one in between, so a start
# that fails is tried again on other ports.
acme_start() {
    local attempt ports
    require_acme
    _acme_tls_cert
    for attempt in 1 2 3 4 5; do
        mapfile -t ports < <(free_ports 6)
        _ACME_PORT=${ports[0]} _ACME_MGMT_PORT=${ports[1]} ACME_HTTP_PORT=${ports[2]}
        _ACME_TLS_PORT=${ports[3]} _ACME_DNS_PORT=${ports[4]} _ACME_CTS_PORT=${ports[5]}
        ACME_DIR=https://127.0.0.1:$_ACME_PORT/dir
        ACME_MGMT=https://127.0.0.1:$_ACME_MGMT_PORT
        ACME_CTS=http://127.0.0.1:$_ACME_CTS_PORT
        _acme_write_config
        if _acme_start_cts; then
            if _acme_start_pebble; then
                note "pebble: pid $PEBBLE_PID, $ACME_DIR, http-01 on port $ACME_HTTP_PORT; challtestsrv: pid $CTS_PID, DNS on $_ACME_DNS_PORT"
                acme_fetch_root
                return 0
            fi
            stop_pid "$CTS_PID"
        fi
        note "pebble did not start (attempt $attempt)"
    done
    sed 's/^/    pebble| /' "$WORK/acme/pebble.log" >&2 || true
    sed 's/^/    challtestsrv| /' "$WORK/acme/challtestsrv.log" >&2 || true
    fail "pebble and pebble-challtestsrv did not start"
}

# acme_stop_pebble / acme_restart_pebble: pebble stopped by its PID; started
# again on the same ports (it forgets every account, order and its CA).
acme_stop_pebble() { stop_pid "$PEBBLE_PID"; }
acme_restart_pebble() {
    stop_pid "$PEBBLE_PID"
    _acme_start_pebble || {
        sed 's/^/    pebble| /' "$WORK/acme/pebble.log" >&2
        fail "pebble did not start again on port $_ACME_PORT"
    }
    acme_fetch_root
    note "pebble restarted: pid $PEBBLE_PID"
}

# acme_fetch_root: ACME_ROOT, pebble's root now (it makes a new one at each start).
acme_fetch_root() {
    ACME_ROOT=$WORK/acme/root.pem
    acme_curl -o "$ACME_ROOT" "$ACME_MGMT/roots/0" || fail "cannot fetch pebble's root from $ACME_MGMT/roots/0"
    grep -q 'BEGIN CERTIFICATE' "$ACME_ROOT" || fail "pebble's /roots/0 gave no certificate"
}

# acme_cert_status CERT.pem: pebble's record of the certificate (JSON:
# Status "Valid" or "Revoked", Reason).
acme_cert_status() {
    local serial
    serial=$(plain_ossl x509 -in "$1" -noout -serial | sed 's/^serial=//' | tr 'A-F' 'a-f' | sed 's/^0*//')
    acme_curl "$ACME_MGMT/cert-status-by-serial/$serial"
}

# acme_set_txt NAME VALUE / acme_clear_txt NAME: a TXT record in challtestsrv.
acme_set_txt() {
    curl -sS --max-time 20 -X POST -d "{\"host\":\"$1.\",\"value\":\"$2\"}" "$ACME_CTS/set-txt"
}
acme_clear_txt() {
    curl -sS --max-time 20 -X POST -d "{\"host\":\"$1.\"}" "$ACME_CTS/clear-txt"
}

# mks_acme ARGS...: the CLI with the options every ACME command of a test
# shares: the state directory $WORK/state.
ACME_STATE=
mks_acme() {
    [ -n "$ACME_STATE" ] || ACME_STATE=$WORK/state
    MTLSKS_STATE_DIR=$ACME_STATE mks "$@"
}

# acme_enroll NAME [extra args...]: enroll --acme, key NAME on $TOKEN_LABEL
# (SANs DNS:NAME.test), answering with ACME_CHAL (default: the built-in
# http-01 responder on ACME_HTTP_PORT), the certificate in $WORK/NAME.crt,
# the key reference in $WORK/NAME.key.pem. acme_enroll_cmd NAME [...] only
# sets ACME_CMD to that command (for run_fails and loops).
ACME_CHAL=()
acme_enroll_cmd() {
    local name=$1
    shift
    [ "${#ACME_CHAL[@]}" -gt 0 ] || ACME_CHAL=(--http-01 "127.0.0.1:$ACME_HTTP_PORT")
    ACME_CMD=(mks_acme enroll --acme "$ACME_DIR" --acme-ca-bundle "$ACME_CA_BUNDLE"
        --token "$TOKEN_LABEL" --label "$name" --san "DNS:$name.test" "${ACME_CHAL[@]}"
        --cert-out "$WORK/$name.crt" --key-ref "$WORK/$name.key.pem" "$@")
}
acme_enroll() {
    acme_enroll_cmd "$@"
    run_ok "acme-enroll-$1" "${ACME_CMD[@]}"
}

# acme_nginx_start SERVER_BLOCKS_FILE [plain]: nginx (master and one worker,
# as root when the test is root) with the server blocks in the file, the
# provider and SoftHSM reachable from its workers (plain: no provider, for a
# web server without TLS); sets NGINX_MASTER (its PID, for reloads) and NGX
# (its directory). Stopped by PID with the test.
acme_nginx_start() {
    local nginx user_line pid
    nginx=$(command -v nginx || echo /usr/sbin/nginx)
    [ -x "$nginx" ] || skip "nginx is not installed (Debian package nginx)"
    NGX=$WORK/nginx
    mkdir -p "$NGX"
    user_line="# not root: master and workers run as $(id -un)"
    [ "$(id -u)" -ne 0 ] || user_line="user root;"
    {
        echo "daemon off;"
        echo "master_process on;"
        echo "worker_processes 1;"
        echo "$user_line"
        echo "pid $NGX/nginx.pid;"
        echo "error_log $NGX/error.log info;"
        echo "env OPENSSL_CONF;"
        echo "env SOFTHSM2_CONF;"
        echo "events { worker_connections 256; }"
        echo "http {"
        echo "    access_log $NGX/access.log;"
        for t in client_body proxy fastcgi uwsgi scgi; do
            echo "    ${t}_temp_path $NGX/$t;"
        done
        cat "$1"
        echo "}"
    } >"$NGX/nginx.conf"
    rm -f "$NGX/nginx.pid"
    local cnf=$TOKEN_CNF
    [ "${2:-}" != plain ] || cnf=/dev/null
    OPENSSL_CONF=$cnf timeout 900 "$nginx" -p "$NGX" -c "$NGX/nginx.conf" -e "$NGX/error.log" \
        </dev/null >"$NGX/master.log" 2>&1 &
    pid=$!
    _SERVER_PIDS+=("$pid")
    for _ in $(seq 200); do
        [ -s "$NGX/nginx.pid" ] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    [ -s "$NGX/nginx.pid" ] || {
        sed 's/^/    nginx| /' "$NGX/master.log" "$NGX/error.log" >&2 || true
        fail "nginx did not start"
    }
    NGINX_MASTER=$(cat "$NGX/nginx.pid")
    note "nginx: master pid $NGINX_MASTER"
}

# assert_chains_to_pebble CERT WHAT: CERT (leaf + intermediates) verifies up to
# pebble's root.
assert_chains_to_pebble() {
    local cert=$1 what=$2
    awk 'n>0{print} /END CERTIFICATE/{n++}' "$cert" >"$cert.untrusted"
    run_ok "verify-$(basename "$cert")" plain_ossl verify -CAfile "$ACME_ROOT" \
        -untrusted "$cert.untrusted" "$cert"
    assert_grep "$WORK/verify-$(basename "$cert").out" ': OK$' "$what: does not chain to pebble's root"
}

# acme_proxy_start: an HTTPS proxy in front of pebble (Python), for the one
# fault pebble cannot produce: a certificate that is not for the key. It
# forwards every request with its own Host (pebble builds its URLs, and
# checks each JWS's url, from the Host header), and while
# $WORK/acme/swap exists answers certificate downloads with the PEM in that
# file instead. Sets ACME_PROXY_DIR (its directory URL).
acme_proxy_start() {
    cat >"$WORK/acme/proxy.py" <<'PY'
import http.client, http.server, os, ssl, sys
listen_cert, listen_key, cafile, upstream, swap = sys.argv[1:6]
up_host, up_port = upstream.split(":")
ctx_up = ssl.create_default_context(cafile=cafile)

class Proxy(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def relay(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else None
        hdrs = {k: v for k, v in self.headers.items()
                if k.lower() in ("content-type", "accept", "host")}
        c = http.client.HTTPSConnection(up_host, int(up_port), context=ctx_up, timeout=30)
        c.request(self.command, self.path, body=body, headers=hdrs)
        r = c.getresponse()
        data = r.read()
        ctype = r.getheader("Content-Type") or ""
        if ctype.startswith("application/pem-certificate-chain") and os.path.exists(swap):
            data = open(swap, "rb").read()
        self.send_response(r.status)
        for k in ("Content-Type", "Replay-Nonce", "Location", "Link", "Retry-After"):
            for v in r.msg.get_all(k) or []:
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        c.close()
    do_GET = do_POST = do_HEAD = relay

srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(listen_cert, listen_key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print("ACCEPT 127.0.0.1:%d" % srv.server_port, flush=True)
srv.serve_forever()
PY
    start_server "$WORK/acme/proxy.log" python3 "$WORK/acme/proxy.py" "$WORK/acme/tls.pem" \
        "$WORK/acme/tls.key" "$ACME_CA_BUNDLE" "127.0.0.1:$_ACME_PORT" "$WORK/acme/swap"
    ACME_PROXY_DIR=https://127.0.0.1:$SERVER_PORT/dir
    note "proxy in front of pebble: $ACME_PROXY_DIR"
}

# silent_server_start: accepts TCP connections on 127.0.0.1 and never answers
# (a CA that hangs). Sets SERVER_PORT.
silent_server_start() {
    cat >"$WORK/silent.py" <<'PY'
import socket, time
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(16)
print("ACCEPT 127.0.0.1:%d" % s.getsockname()[1], flush=True)
held = []
while True:
    held.append(s.accept()[0])
PY
    start_server "$WORK/silent.log" python3 "$WORK/silent.py"
}

# acme_snapshot NAME / assert_acme_unchanged NAME WHAT: the serving state of
# an enrollment (--cert-out, --key-ref, the token's key NAME by its id)
# before a failure, and the check that it is still so after.
_acme_key_ids() {
    p11tool_ --token-label "$TOKEN_LABEL" --login --pin "$TEST_PIN" --list-objects --type privkey 2>/dev/null |
        awk -v l="$1" '/^Private Key Object/{lab=""} /label:/{lab=$2} /ID:/{if (lab==l) print $2}'
}
acme_snapshot() {
    cp "$WORK/$1.crt" "$WORK/$1.crt.before"
    cp "$WORK/$1.key.pem" "$WORK/$1.key.before"
    _acme_key_ids "$1" >"$WORK/$1.ids.before"
}
assert_acme_unchanged() {
    assert_same_file "$WORK/$1.crt" "$WORK/$1.crt.before" "$2: --cert-out changed"
    assert_same_file "$WORK/$1.key.pem" "$WORK/$1.key.before" "$2: --key-ref changed"
    _acme_key_ids "$1" >"$WORK/$1.ids.after"
    assert_same_file "$WORK/$1.ids.after" "$WORK/$1.ids.before" "$2: the token's key '$1' changed"
}

# acme_dns_hook MODE: writes the dns-01 hook $WORK/dns-hook ("dns-hook
# add|remove NAME VALUE": the TXT record in pebble-challtestsrv, each call
# logged in $WORK/dns-hook.log). MODE good sets the right value, bad a wrong
# one, pause waits (once) at the first add until $WORK/restarted exists,
# having made $WORK/paused. The mode is read from $WORK/dns-mode at each
# call: acme_dns_hook again switches it.
acme_dns_hook() {
    echo "$1" >"$WORK/dns-mode"
    cat >"$WORK/dns-hook" <<EOF
#!/bin/sh
echo "\$*" >>"$WORK/dns-hook.log"
mode=\$(cat "$WORK/dns-mode")
value=\$3
[ "\$mode" = bad ] && value=wrong-value
if [ "\$1" = add ] && [ "\$mode" = pause ] && [ ! -e "$WORK/restarted" ]; then
    : >"$WORK/paused"
    for i in \$(seq 600); do [ -e "$WORK/restarted" ] && break; sleep 0.1; done
fi
case \$1 in
add) env -u OPENSSL_CONF curl -fsS -X POST -d "{\"host\":\"\$2.\",\"value\":\"\$value\"}" "$ACME_CTS/set-txt" ;;
remove) env -u OPENSSL_CONF curl -fsS -X POST -d "{\"host\":\"\$2.\"}" "$ACME_CTS/clear-txt" ;;
esac
EOF
    chmod +x "$WORK/dns-hook"
}
