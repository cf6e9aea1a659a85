#!/usr/bin/env bash
# tpm_mtls.sh ec|rsa [bare|tabrmd]
#
# Mutual TLS between `openssl s_server -Verify 1 -verify_return_error` and
# `openssl s_client` with private keys in a TPM (a bare swtpm: no resource
# manager, three transient object slots), loaded through our provider from
# openssl.cnf: TLS 1.3 and 1.2; the client's key in the TPM and the server's in
# the SoftHSM token; the server's in the TPM (its file, or its persistent
# handle as a tpmkey: URI) and the client's in the token; both in the TPM.
# RSA also with PKCS#1 v1.5 signatures (TLS 1.2). curl and Python's ssl, which
# only read key files, with the client's TPM key file.
#
# Then 20 handshakes in a row: one s_server with its key in the TPM serves
# -naccept 20, and 20 s_client processes, one after the other, each load the
# client key from its TPM key file, sign, flush and exit. A process that left
# an object loaded would make a later one fail (TPM_RC_OBJECT_MEMORY): at most
# three fit. Afterwards no transient object is left in the TPM.
#
# bare (default): on the swtpm itself, where nothing stays loaded between
# signatures (ContextLoad, Sign, FlushContext each). tabrmd: the same behind
# tpm2-abrmd on a private D-Bus session bus, where each process loads its
# key once and keeps it: one TPM2_Sign per signature.
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/tpm.sh"

KIND=${1:?usage: tpm_mtls.sh ec|rsa [bare|tabrmd]}
RM=${2:-bare}
case $RM in bare | tabrmd) ;; *) fail "unknown resource manager $RM" ;; esac
case $KIND in
ec) KEY_TYPE=ec:P-256 SIG13=ECDSA SIG12=ECDSA ;;
rsa) KEY_TYPE=rsa:2048 SIG13=RSA-PSS SIG12='RSA(-PSS)?' ;;
*) fail "unknown kind $KIND" ;;
esac

setup_tpm_test
require_tpm2_tools
[ "$RM" = bare ] || require_tabrmd
start_swtpm a
TOKEN_LABEL=tpm-mtls
add_token "$TOKEN_LABEL"
if [ "$RM" = tabrmd ]; then
    start_tabrmd "$SWTPM_TCTI"
    use_tpm "$TABRMD_TCTI"
else
    use_tpm "$SWTPM_TCTI"
fi

tpm_enroll tsrv "$KEY_TYPE" server
tpm_enroll tsrvp "$KEY_TYPE" server --persist 0x81000010
tpm_enroll tcli "$KEY_TYPE" client
enroll psrv "$KEY_TYPE" server
enroll pcli "$KEY_TYPE" client
PCLI_URI=$ENROLL_URI
for k in tsrv tsrvp tcli psrv pcli; do
    ca_sign "$WORK/$k.csr" "$WORK/$k.pem"
done

n=0
for ver in 1_3 1_2; do
    sig=$SIG13
    [ "$ver" = 1_2 ] && sig=$SIG12
    for form in both-tpm client-tpm server-tpm server-handle; do
        case $form in
        both-tpm) s=tsrv skey=$WORK/tsrv.key.pem c=tcli ckey=$WORK/tcli.key.pem ;;
        client-tpm) s=psrv skey=$WORK/psrv.key.pem c=tcli ckey=$WORK/tcli.key.pem ;;
        server-tpm) s=tsrv skey=$WORK/tsrv.key.pem c=pcli ckey=$WORK/pcli.key.pem ;;
        server-handle) s=tsrvp skey=tpmkey:handle=0x81000010 c=pcli ckey=$PCLI_URI ;;
        esac
        step="$KIND-tls$ver-$form"
        tls_handshake "$step" "$ver" "$WORK/$s.pem" "$skey" "$WORK/$c.pem" "$ckey"
        assert_grep "$WORK/$step.client.log" "^Peer signature type: $sig\$" \
            "$step: the server did not sign with $sig"
        n=$((n + 1))
    done
done

if [ "$KIND" = rsa ]; then
    # RSA PKCS#1 v1.5 signatures on both sides (TLS 1.2 only; 1.3 forbids them).
    step=rsa-tls1_2-pkcs1-both-tpm
    TLS_CLIENT_ARGS=(-sigalgs RSA+SHA256 -client_sigalgs RSA+SHA256)
    tls_handshake "$step" 1_2 "$WORK/tsrv.pem" "$WORK/tsrv.key.pem" "$WORK/tcli.pem" \
        "$WORK/tcli.key.pem" -sigalgs RSA+SHA256 -client_sigalgs RSA+SHA256
    TLS_CLIENT_ARGS=()
    assert_grep "$WORK/$step.client.log" '^Peer signature type: RSA$' \
        "$step: the server did not sign with RSA PKCS#1 v1.5"
    n=$((n + 1))
fi
tpm_assert_no_transient "$SWTPM_TCTI" "after $n handshakes"
note "$n mutual-TLS handshakes with $KEY_TYPE keys in the TPM: ok"

# Programs that only read key files: curl and Python's ssl, with the client's
# TPM key file, against a server whose key is in the TPM too.
clients=()
command -v curl >/dev/null 2>&1 && clients+=(curl)
command -v python3 >/dev/null 2>&1 && clients+=(python)
if [ "${#clients[@]}" -gt 0 ]; then
    start_server "$WORK/clients.server.log" env OPENSSL_CONF="$TOKEN_CNF" openssl s_server \
        -accept 127.0.0.1:0 -naccept "${#clients[@]}" -www -Verify 1 -verify_return_error \
        -cert "$WORK/tsrv.pem" -key "$WORK/tsrv.key.pem" -CAfile "$MTLSKS_FIXTURE/ca.pem"
    clients_pid=$SERVER_PID
    for c in "${clients[@]}"; do
        case $c in
        curl)
            run_ok client-curl env OPENSSL_CONF="$TOKEN_CNF" curl -sS --max-time 60 \
                --cacert "$MTLSKS_FIXTURE/ca.pem" --cert "$WORK/tcli.pem" --key "$WORK/tcli.key.pem" \
                "https://localhost:$SERVER_PORT/"
            ;;
        python)
            run_ok client-python env OPENSSL_CONF="$TOKEN_CNF" python3 -c '
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
ctx.load_cert_chain(sys.argv[2], sys.argv[3])
with socket.create_connection(("127.0.0.1", int(sys.argv[4])), timeout=60) as raw:
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
sys.stdout.write(data.decode(errors="replace"))
' "$MTLSKS_FIXTURE/ca.pem" "$WORK/tcli.pem" "$WORK/tcli.key.pem" "$SERVER_PORT"
            ;;
        esac
        assert_grep "$WORK/client-$c.out" '^Client certificate$' "$c: the server saw no client certificate"
        assert_grep "$WORK/client-$c.out" 'Subject: .*CN ?= ?tcli' "$c: another client certificate"
        note "$c with the client key in the TPM: ok"
    done
    wait_pid "$clients_pid" 30 || fail "the server did not exit after the clients"
    [ "$WAIT_RC" -eq 0 ] || fail "s_server exit $WAIT_RC after the clients"
fi

# 20 in a row: one server, 20 client processes, all keys in the one bare swtpm.
# With tpm2-tss's pcap TCTI between the server and the TPM, and between the
# first client and the TPM, the commands each process sent are counted.
ROUNDS=20
SRV_CNF=$TOKEN_CNF CLI1_CNF=$TOKEN_CNF
if tpm_pcap_available; then
    SRV_CNF=$WORK/pcap-server.cnf CLI1_CNF=$WORK/pcap-client.cnf
    tpm_cnf "$SRV_CNF" "pcap:$TPM_TCTI" "file:$PIN_FILE"
    tpm_cnf "$CLI1_CNF" "pcap:$TPM_TCTI" "file:$PIN_FILE"
else
    note "tpm2-tss pcap TCTI missing: TPM commands per process not counted"
fi
start_server "$WORK/seq.server.log" env OPENSSL_CONF="$SRV_CNF" TCTI_PCAP_FILE="$WORK/server.pcap" \
    openssl s_server \
    -accept 127.0.0.1:0 -naccept "$ROUNDS" -www -Verify 1 -verify_return_error \
    -cert "$WORK/tsrv.pem" -key "$WORK/tsrv.key.pem" -CAfile "$MTLSKS_FIXTURE/ca.pem"
seq_pid=$SERVER_PID
for i in $(seq "$ROUNDS"); do
    step=seq-$i
    rc=0
    cnf=$TOKEN_CNF
    [ "$i" = 1 ] && cnf=$CLI1_CNF
    printf 'GET / HTTP/1.0\r\n\r\n' | timeout 60 env OPENSSL_CONF="$cnf" \
        TCTI_PCAP_FILE="$WORK/client.pcap" openssl s_client \
        -connect "127.0.0.1:$SERVER_PORT" -tls1_3 -cert "$WORK/tcli.pem" -key "$WORK/tcli.key.pem" \
        -CAfile "$MTLSKS_FIXTURE/ca.pem" -verify_return_error -ign_eof \
        >"$WORK/$step.client.log" 2>&1 || rc=$?
    if [ "$rc" -ne 0 ] || ! grep -q '^Client certificate$' "$WORK/$step.client.log"; then
        sed 's/^/    client| /' "$WORK/$step.client.log" >&2
        sed 's/^/    server| /' "$WORK/seq.server.log" >&2
        fail "$step: handshake $i of $ROUNDS failed (s_client exit $rc)"
    fi
    assert_grep "$WORK/$step.client.log" '^ *Verify return code: 0 \(ok\)' "$step: server not verified"
done
if ! wait_pid "$seq_pid" 30; then
    fail "the server did not exit after $ROUNDS handshakes"
fi
[ "$WAIT_RC" -eq 0 ] || {
    sed 's/^/    server| /' "$WORK/seq.server.log" >&2
    fail "s_server -naccept $ROUNDS exit $WAIT_RC"
}
assert_no_grep "$WORK/seq.server.log" 'error' "the server logged an error"
tpm_assert_no_transient "$SWTPM_TCTI" "after $ROUNDS handshakes in a row"
if [ "$SRV_CNF" != "$TOKEN_CNF" ]; then
    # The commands each process sent, as its TCTI saw them.
    srv_cmds=$(tpm_pcap_commands "$WORK/server.pcap")
    cli_cmds=$(tpm_pcap_commands "$WORK/client.pcap")
    note "TPM commands of s_server over $ROUNDS handshakes ($RM): $srv_cmds"
    note "TPM commands of one s_client process ($RM): $cli_cmds"
    assert_eq "$(tpm_count_of Sign "$srv_cmds")" "$ROUNDS" "server: TPM2_Sign per handshake"
    if [ "$RM" = tabrmd ]; then
        # Held: the server loads its key once (standard primary, load, flush
        # the primary), one TPM2_Sign per handshake, flush at exit. A client
        # process: the same around its one signature.
        assert_eq "${srv_cmds%% *}" $((ROUNDS + 4)) "server: TPM commands for $ROUNDS handshakes"
        assert_eq "$cli_cmds" "5 CreatePrimary Load FlushContext Sign FlushContext" \
            "client: TPM commands of one process"
    else
        # Nothing stays loaded between signatures: the server loads its key
        # file once (standard primary, load, save the key's context, flush
        # the primary), then each handshake is ContextLoad, Sign,
        # FlushContext. A client process: the same around its one signature.
        assert_eq "${srv_cmds%% *}" $((3 * ROUNDS + 3)) "server: TPM commands for $ROUNDS handshakes"
        assert_eq "$cli_cmds" "6 CreatePrimary Load ContextSave FlushContext Sign FlushContext" \
            "client: TPM commands of one process"
    fi
fi
note "$ROUNDS handshakes in a row on the bare swtpm (one server, $ROUNDS client processes): ok"
