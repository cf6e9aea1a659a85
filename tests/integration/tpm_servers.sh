#!/usr/bin/env bash
# tpm_servers.sh sigterm|concurrent|forking [bare|tabrmd]
#
# Servers with their key in a TPM, living the way services do: stopped by a
# signal, serving clients that sign at the same time, forking a process per
# connection. On a bare TPM (swtpm: no resource manager, three transient
# object slots) whatever a process leaves loaded stays loaded after it dies,
# so every mode ends by counting the transient objects left in the TPM
# (tpm2_getcap handles-transient): there must be none.
#
# sigterm     five `openssl s_server` runs with the TPM key, each serving one
#             handshake and then stopped by SIGTERM (how service managers stop
#             services; s_server dies of it, no exit handler runs): the
#             transient objects left after each run are printed, none may be
#             left, and a sixth server serves.
# concurrent  one s_server with a TPM key and three clients at once, each with
#             a TPM key of its own, 5 handshakes each (a new s_client process
#             per handshake): 0 failures. Processes that load keys at the same
#             moment can find the TPM's slots taken for an instant; the
#             keystore waits for one to free.
# forking     Python's ssl as a server (tests/lib/tls_server.py) that loads
#             its TPM key file and forks a child per connection, the child
#             leaving through os._exit (no exit handler runs): 100
#             connections from one client process, 0 failures.
#
# bare (default) runs on the swtpm itself; tabrmd runs the same behind
# Debian's tpm2-abrmd resource manager on a private D-Bus session bus
# (start_tabrmd in tests/lib/tpm.sh), where objects are held between
# signatures and the resource manager flushes a client's objects when it
# disconnects.
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/tpm.sh"

MODE=${1:?usage: tpm_servers.sh sigterm|concurrent|forking [bare|tabrmd]}
RM=${2:-bare}
case $MODE in sigterm | concurrent | forking) ;; *) fail "unknown mode $MODE" ;; esac
case $RM in bare | tabrmd) ;; *) fail "unknown resource manager $RM" ;; esac

setup_tpm_test
require_tpm2_tools
[ "$RM" = bare ] || require_tabrmd
start_swtpm a
if [ "$RM" = tabrmd ]; then
    start_tabrmd "$SWTPM_TCTI"
    use_tpm "$TABRMD_TCTI"
else
    use_tpm "$SWTPM_TCTI"
fi
# What is left in the TPM is counted on the TPM itself, past any resource
# manager.
TPM_DIRECT=$SWTPM_TCTI

tpm_enroll srv ec:P-256 server
ca_sign "$WORK/srv.csr" "$WORK/srv.pem"
CA=$MTLSKS_FIXTURE/ca.pem

# child_of PID: the child processes of PID (under timeout: the server).
child_of() {
    local f stat ppid
    for f in /proc/[0-9]*; do
        stat=$(cat "$f/stat" 2>/dev/null) || continue
        # The name may hold spaces and parentheses: the fields after it.
        read -r _ ppid _ <<<"${stat##*) }"
        [ "$ppid" = "$1" ] && echo "${f#/proc/}"
    done
    return 0
}

case $MODE in
sigterm)
    # The clients' keys are in software: only the servers use the TPM.
    software_client cli ca
    RUNS=5
    left=() failed=0
    for i in $(seq "$RUNS"); do
        log=$WORK/sigterm-$i.server.log
        start_server "$log" env OPENSSL_CONF="$TOKEN_CNF" openssl s_server \
            -accept 127.0.0.1:0 -www -Verify 1 -verify_return_error \
            -cert "$WORK/srv.pem" -key "$WORK/srv.key.pem" -CAfile "$CA"
        wrapper=$SERVER_PID
        server=$(child_of "$wrapper")
        [ -n "$server" ] || fail "run $i: no s_server process under timeout ($wrapper)"
        rc=0
        printf 'GET / HTTP/1.0\r\n\r\n' | timeout 60 env OPENSSL_CONF="$MTLSKS_FIXTURE/plain.cnf" \
            openssl s_client -connect "127.0.0.1:$SERVER_PORT" -tls1_3 -cert "$WORK/cli.pem" \
            -key "$WORK/cli.soft.key" -CAfile "$CA" -verify_return_error -ign_eof \
            >"$WORK/sigterm-$i.client.log" 2>&1 || rc=$?
        if [ "$rc" -ne 0 ] || ! grep -q '^Client certificate$' "$WORK/sigterm-$i.client.log"; then
            failed=$((failed + 1))
            note "run $i: the handshake failed (s_client exit $rc)"
            sed 's/^/    server| /' "$log" >&2
        fi
        kill -TERM "$server"
        wait_pid "$wrapper" 30 || fail "run $i: s_server $server still running 30 s after SIGTERM"
        left+=("$(tpm_transient_count "$TPM_DIRECT")")
        note "run $i: s_server $server stopped by SIGTERM, ${left[-1]} transient objects in the TPM"
    done
    note "transient objects left after each of $RUNS SIGTERM'd servers: ${left[*]}"
    assert_eq "$failed" 0 "handshakes that failed in $RUNS servers stopped by SIGTERM"
    tpm_assert_no_transient "$TPM_DIRECT" "after $RUNS servers stopped by SIGTERM"
    tls_handshake sixth 1_3 "$WORK/srv.pem" "$WORK/srv.key.pem" "$WORK/cli.pem" "$WORK/cli.soft.key"
    tpm_assert_no_transient "$TPM_DIRECT" "after the sixth server"
    note "$RUNS servers stopped by SIGTERM left nothing in the TPM; the sixth served"
    ;;

concurrent)
    CLIENTS=3 EACH=5
    for c in $(seq "$CLIENTS"); do
        tpm_enroll "cli$c" ec:P-256 client
        ca_sign "$WORK/cli$c.csr" "$WORK/cli$c.pem"
    done
    log=$WORK/concurrent.server.log
    start_server "$log" env OPENSSL_CONF="$TOKEN_CNF" openssl s_server \
        -accept 127.0.0.1:0 -naccept $((CLIENTS * EACH)) -www -Verify 1 -verify_return_error \
        -cert "$WORK/srv.pem" -key "$WORK/srv.key.pem" -CAfile "$CA"
    spid=$SERVER_PID
    # client_loop C: EACH handshakes in a row, one s_client process each;
    # writes the failures to $WORK/cli$C.failures.
    client_loop() {
        local c=$1 i rc fails=0 out
        for i in $(seq "$EACH"); do
            out=$WORK/cli$c-$i.client.log
            rc=0
            printf 'GET / HTTP/1.0\r\n\r\n' | timeout 60 env OPENSSL_CONF="$TOKEN_CNF" openssl s_client \
                -connect "127.0.0.1:$SERVER_PORT" -tls1_3 -cert "$WORK/cli$c.pem" \
                -key "$WORK/cli$c.key.pem" -CAfile "$CA" -verify_return_error -ign_eof \
                >"$out" 2>&1 || rc=$?
            if [ "$rc" -ne 0 ] || ! grep -Eq "Subject: .*CN ?= ?cli$c" "$out"; then
                fails=$((fails + 1))
                echo "    client $c, handshake $i: s_client exit $rc" >&2
                sed 's/^/    client| /' "$out" >&2
            fi
        done
        echo "$fails" >"$WORK/cli$c.failures"
    }
    pids=()
    for c in $(seq "$CLIENTS"); do
        client_loop "$c" &
        pids+=("$!")
    done
    for p in "${pids[@]}"; do
        wait "$p"
    done
    failures=0
    for c in $(seq "$CLIENTS"); do
        failures=$((failures + $(cat "$WORK/cli$c.failures")))
    done
    wait_pid "$spid" 30 || fail "s_server still running after $((CLIENTS * EACH)) handshakes"
    [ "$WAIT_RC" -eq 0 ] || {
        sed 's/^/    server| /' "$log" >&2
        fail "s_server exit $WAIT_RC"
    }
    assert_eq "$failures" 0 "failed handshakes ($CLIENTS clients at once, $EACH each)"
    assert_no_grep "$log" 'error' "the server logged an error"
    tpm_assert_no_transient "$TPM_DIRECT" "after the concurrent handshakes"
    note "$CLIENTS clients at once with TPM keys, $EACH handshakes each, against a server with a TPM key: 0 failures"
    ;;

forking)
    N=100
    software_client cli ca
    cat >"$WORK/client.py" <<'PY'
# client.py PORT CA CERT KEY N: N connections, one after the other, each a
# full mutual-TLS handshake; prints the failures.
import socket, ssl, sys

port, ca, cert, key, n = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
ctx = ssl.create_default_context(cafile=ca)
ctx.load_cert_chain(cert, key)
failures = 0
for i in range(n):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=60) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                data = b""
                while chunk := s.recv(4096):
                    data += chunk
        if b"hello CN=cli" not in data:
            raise RuntimeError("no answer: %r" % data)
    except Exception as e:
        failures += 1
        print("connection %d: %r" % (i, e), file=sys.stderr)
print("%d connections, %d failures" % (n, failures))
sys.exit(1 if failures else 0)
PY
    log=$WORK/forking.server.log
    start_server "$log" env OPENSSL_CONF="$TOKEN_CNF" python3 -u "$(dirname "$0")/../lib/tls_server.py" \
        fork "$CA" "$WORK/srv.pem" "$WORK/srv.key.pem" "$N"
    spid=$SERVER_PID
    rc=0
    OPENSSL_CONF=$MTLSKS_FIXTURE/plain.cnf python3 "$WORK/client.py" "$SERVER_PORT" "$CA" \
        "$WORK/cli.pem" "$WORK/cli.soft.key" "$N" >"$WORK/client.out" 2>"$WORK/client.err" || rc=$?
    note "client: $(cat "$WORK/client.out")"
    wait_pid "$spid" 60 || fail "the forking server still running after $N connections"
    if [ "$rc" -ne 0 ] || [ "$WAIT_RC" -ne 0 ] || grep -Eq '^(refused|child) ' "$log"; then
        head -n 20 "$WORK/client.err" | sed 's/^/    client| /' >&2
        grep -E '^(refused|child) ' "$log" | head -n 20 | sed 's/^/    server| /' >&2
        fail "forking server: client exit $rc, server exit $WAIT_RC, $(grep -Ec '^(refused|child) ' "$log" || true) children failed"
    fi
    assert_eq "$(grep -c '^served CN=cli ' "$log")" "$N" "connections the forking server served"
    tpm_assert_no_transient "$TPM_DIRECT" "after $N connections to the forking server"
    note "forking server with a TPM key: $N connections, one child each, 0 failures"
    ;;
esac
