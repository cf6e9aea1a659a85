#!/usr/bin/env bash
# clients.sh curl|python
#
# Programs that only read key files use a token key through a key-reference
# file and OPENSSL_CONF: curl (--cert cli.pem --key key-ref.pem) and Python's
# ssl module (load_cert_chain('cli.pem', 'key-ref.pem')) do mutual TLS with
# `openssl s_server -Verify 1 -verify_return_error`, whose key is in the token
# too. The server's page echoes the client certificate it saw.
. "$(dirname "$0")/../lib/common.sh"

CLIENT=${1:?usage: clients.sh curl|python}
setup_test
case $CLIENT in
curl)
    require_cmd curl
    curl --version | head -n1 | grep -q 'OpenSSL/3\.' || skip "curl is not built with OpenSSL 3: $(curl --version | head -n1)"
    ;;
python)
    require_cmd python3
    pyssl=$(python3 -c 'import ssl; print(ssl.OPENSSL_VERSION)' 2>/dev/null) || skip "python3 has no ssl module"
    libssl=$(openssl version | sed -n 's/.*(Library: \(.*\))$/\1/p')
    [ -n "$libssl" ] || libssl=$(openssl version)
    [ "$pyssl" = "$libssl" ] || skip "python3 uses $pyssl, not the system's $libssl that the provider is built for"
    ;;
*) fail "unknown client $CLIENT" ;;
esac
new_token mtls-a

enroll srv ec:P-256 server
enroll cli ec:P-256 client
ca_sign "$WORK/srv.csr" "$WORK/srv.pem"
ca_sign "$WORK/cli.csr" "$WORK/cli.pem"

start_server "$WORK/server.log" env OPENSSL_CONF="$TOKEN_CNF" openssl s_server \
    -accept 127.0.0.1:0 -naccept 1 -www -Verify 1 -verify_return_error \
    -cert "$WORK/srv.pem" -key "$WORK/srv.key.pem" -CAfile "$MTLSKS_FIXTURE/ca.pem"
spid=$SERVER_PID

case $CLIENT in
curl)
    run_ok curl env OPENSSL_CONF="$TOKEN_CNF" curl --silent --show-error --fail \
        --max-time 60 --cacert "$MTLSKS_FIXTURE/ca.pem" \
        --cert "$WORK/cli.pem" --key "$WORK/cli.key.pem" "https://localhost:$SERVER_PORT/"
    RESPONSE=$WORK/curl.out
    ;;
python)
    cat >"$WORK/client.py" <<'PY'
import socket, ssl, sys
port, ca, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.load_verify_locations(ca)
ctx.load_cert_chain(cert, key)  # key: the key-reference file
with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
    with ctx.wrap_socket(sock, server_hostname="localhost") as tls:
        print("protocol", tls.version(), file=sys.stderr)
        tls.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = b""
        while True:
            chunk = tls.recv(65536)
            if not chunk:
                break
            data += chunk
sys.stdout.write(data.decode("utf-8", "replace"))
PY
    run_ok python env OPENSSL_CONF="$TOKEN_CNF" python3 "$WORK/client.py" "$SERVER_PORT" \
        "$MTLSKS_FIXTURE/ca.pem" "$WORK/cli.pem" "$WORK/cli.key.pem"
    RESPONSE=$WORK/python.out
    ;;
esac

wait_pid "$spid" 30 || fail "server still running 30 s after the client finished"
[ "$WAIT_RC" -eq 0 ] || {
    sed 's/^/    server| /' "$WORK/server.log" >&2
    fail "s_server exit $WAIT_RC"
}
assert_grep "$RESPONSE" '^Client certificate$' "$CLIENT: the server saw no client certificate"
assert_grep "$RESPONSE" 'Subject: .*CN ?= ?cli' "$CLIENT: the server saw another client certificate"
note "$CLIENT: mutual TLS with a key-reference file: ok"
