#!/usr/bin/env bash
# clients.sh curl|python|python-server
#
# Programs that only read key files use token keys through a key-reference
# file and OPENSSL_CONF, with no code of their own for it:
#
# curl           curl 7.88 (--cert cli.pem --key cli.key.pem) against `openssl
#                s_server -Verify 1 -verify_return_error`, whose key is in the
#                token too; EC P-256 and RSA 2048 client keys, TLS 1.3 and 1.2.
# python         Python 3's ssl as a client (SSLContext.load_cert_chain('cli.pem',
#                'cli.key.pem')), the same matrix.
# python-server  Python 3's ssl as a server (load_cert_chain with the server's
#                key reference, verify_mode CERT_REQUIRED), once forking a
#                process per connection after loading the key (EC key), once
#                with a thread per connection (RSA key); clients: curl, Python
#                and openssl s_client, TLS 1.3 and 1.2, all with token keys;
#                and a client without a certificate, which it must refuse.
#
# Server and client keys live in separate token directories
# (clients_lib.sh). Each server page echoes the client certificate it saw.
. "$(dirname "$0")/../lib/common.sh"

CLIENT=${1:?usage: clients.sh curl|python|python-server}
require_python_ssl() {
    require_cmd python3
    local pyssl libssl
    pyssl=$(python3 -c 'import ssl; print(ssl.OPENSSL_VERSION)' 2>/dev/null) || skip "python3 has no ssl module"
    libssl=$(openssl version | sed -n 's/.*(Library: \(.*\))$/\1/p')
    [ -n "$libssl" ] || libssl=$(openssl version)
    [ "$pyssl" = "$libssl" ] || skip "python3 uses $pyssl, not the system's $libssl that the provider is built for"
}
require_curl() {
    require_cmd curl
    curl --version | head -n1 | grep -q 'OpenSSL/3\.' || skip "curl is not built with OpenSSL 3: $(curl --version | head -n1)"
}
case $CLIENT in
curl) require_curl ;;
python) require_python_ssl ;;
python-server)
    require_python_ssl
    require_curl
    ;;
*) fail "unknown client $CLIENT" ;;
esac
setup_test
. "$(dirname "$0")/clients_lib.sh"
split_tokens

on_server_token
enroll srv ec:P-256 server
ca_sign "$WORK/srv.csr" "$WORK/srv.pem"
enroll srv-rsa rsa:2048 server
ca_sign "$WORK/srv-rsa.csr" "$WORK/srv-rsa.pem"
on_client_token
enroll cli ec:P-256 client
ca_sign "$WORK/cli.csr" "$WORK/cli.pem"
enroll cli-rsa rsa:2048 client
ca_sign "$WORK/cli-rsa.csr" "$WORK/cli-rsa.pem"

CA=$MTLSKS_FIXTURE/ca.pem

# A client of Python's ssl: one GET over a new connection, the page on stdout.
cat >"$WORK/client.py" <<'PY'
import socket, ssl, sys

port, ca, cert, key, tls = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.load_verify_locations(ca)
ctx.load_cert_chain(cert, key)  # key: the key-reference file
version = {"1.3": ssl.TLSVersion.TLSv1_3, "1.2": ssl.TLSVersion.TLSv1_2}[tls]
ctx.minimum_version = ctx.maximum_version = version
with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
    with ctx.wrap_socket(sock, server_hostname="localhost") as tls_sock:
        print("protocol", tls_sock.version(), file=sys.stderr)
        tls_sock.sendall(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        data = b""
        while True:
            chunk = tls_sock.recv(65536)
            if not chunk:
                break
            data += chunk
sys.stdout.write(data.decode("utf-8", "replace"))
PY

# client_get STEP CLIENT TLSVER CERT KEY PORT: one request; the page in
# $WORK/STEP.out.
client_get() {
    local step=$1 client=$2 ver=$3 cert=$4 key=$5 port=$6 tls=(--tlsv1.3)
    case $client in
    curl)
        [ "$ver" = 1.2 ] && tls=(--tlsv1.2 --tls-max 1.2)
        run_ok "$step" env OPENSSL_CONF="$TOKEN_CNF" curl --silent --show-error --fail \
            --max-time 60 "${tls[@]}" --cacert "$CA" --cert "$cert" --key "$key" \
            "https://localhost:$port/"
        ;;
    python)
        run_ok "$step" env OPENSSL_CONF="$TOKEN_CNF" python3 "$WORK/client.py" "$port" "$CA" \
            "$cert" "$key" "$ver"
        ;;
    s_client)
        printf 'GET / HTTP/1.0\r\n\r\n' >"$WORK/$step.in"
        run_ok "$step" env OPENSSL_CONF="$TOKEN_CNF" timeout 60 openssl s_client -quiet \
            -connect "127.0.0.1:$port" -servername localhost "-tls${ver/./_}" -cert "$cert" \
            -key "$key" -CAfile "$CA" -verify_return_error -ign_eof <"$WORK/$step.in"
        ;;
    esac
}

# --- clients against openssl s_server ---
if [ "$CLIENT" = curl ] || [ "$CLIENT" = python ]; then
    n=0
    for name in cli cli-rsa; do
        for ver in 1.3 1.2; do
            step=$CLIENT-$name-tls$ver
            start_server "$WORK/$step.server.log" env OPENSSL_CONF="$TOKEN_CNF" \
                SOFTHSM2_CONF="$SRV_SOFTHSM2_CONF" openssl s_server -accept 127.0.0.1:0 \
                -naccept 1 -www -Verify 1 -verify_return_error -cert "$WORK/srv.pem" \
                -key "$WORK/srv.key.pem" -CAfile "$CA"
            spid=$SERVER_PID
            client_get "$step" "$CLIENT" "$ver" "$WORK/$name.pem" "$WORK/$name.key.pem" "$SERVER_PORT"
            wait_pid "$spid" 30 || fail "$step: server still running 30 s after the client finished"
            if [ "$WAIT_RC" -ne 0 ]; then
                sed 's/^/    server| /' "$WORK/$step.server.log" >&2
                fail "$step: s_server exit $WAIT_RC"
            fi
            assert_grep "$WORK/$step.out" "^New, TLSv$ver, Cipher is" "$step: not a TLS $ver handshake"
            assert_grep "$WORK/$step.out" '^Client certificate$' "$step: the server saw no client certificate"
            assert_grep "$WORK/$step.out" "Subject: .*CN ?= ?$name(,|$)" \
                "$step: the server saw another client certificate"
            [ "$CLIENT" = curl ] || assert_grep "$WORK/$step.err" "^protocol TLSv$ver\$" \
                "$step: Python did not negotiate TLS $ver"
            note "$step: mutual TLS with a key-reference file: ok"
            n=$((n + 1))
        done
    done
    note "$CLIENT: $n mutual-TLS requests with token keys on both sides: ok"
    exit 0
fi

# --- Python's ssl as the server (tests/lib/tls_server.py) ---
n=0
for mode in fork thread; do
    case $mode in
    fork) srv=srv ;;
    thread) srv="srv-rsa" ;;
    esac
    log=$WORK/pyserver-$mode.log
    # 6 connections: curl, Python and s_client over TLS 1.3 and 1.2, then one
    # without a client certificate.
    start_server "$log" env OPENSSL_CONF="$TOKEN_CNF" SOFTHSM2_CONF="$SRV_SOFTHSM2_CONF" \
        python3 -u "$(dirname "$0")/../lib/tls_server.py" "$mode" "$CA" "$WORK/$srv.pem" "$WORK/$srv.key.pem" 7
    spid=$SERVER_PID
    for client in curl python s_client; do
        for ver in 1.3 1.2; do
            step=pyserver-$mode-$client-tls$ver
            client_get "$step" "$client" "$ver" "$WORK/cli.pem" "$WORK/cli.key.pem" "$SERVER_PORT"
            assert_grep "$WORK/$step.out" "^hello CN=cli \\(TLSv$ver, pid [0-9]+\\)\$" \
                "$step: the server did not see the client's certificate over TLS $ver"
            n=$((n + 1))
        done
    done
    step=pyserver-$mode-no-cert
    run_fails "$step" env OPENSSL_CONF="$TOKEN_CNF" curl --silent --show-error --max-time 60 \
        --cacert "$CA" "https://localhost:$SERVER_PORT/"
    wait_pid "$spid" 60 || fail "python server ($mode) still running after its 7 connections"
    if [ "$WAIT_RC" -ne 0 ]; then
        sed 's/^/    server| /' "$log" >&2
        fail "python server ($mode): exit $WAIT_RC"
    fi
    assert_eq "$(grep -c '^served CN=cli ' "$log")" 6 "python server ($mode): connections served"
    assert_eq "$(grep -c '^refused: .*PEER_DID_NOT_RETURN_A_CERTIFICATE' "$log")" 1 \
        "python server ($mode): the client without a certificate refused"
    assert_no_grep "$log" 'killed by signal' "python server ($mode): a child crashed"
    server_pid=$(sed -n 's/^done pid //p' "$log")
    pids=$(sed -n 's/^served .* pid //p' "$log" | sort -u | wc -l)
    if [ "$mode" = fork ]; then
        # Every handshake in a child forked after the key was loaded.
        assert_no_grep "$log" "^served .* pid $server_pid\$" "python server (fork): a handshake in the parent"
        assert_eq "$pids" 6 "python server (fork): processes that did a handshake"
    else
        assert_eq "$pids" 1 "python server (thread): processes that did a handshake"
    fi
    note "python server ($mode, $srv key): 6 clients with token keys served, 1 without a certificate refused"
done
note "python-server: $n mutual-TLS requests with token keys on both sides: ok"
