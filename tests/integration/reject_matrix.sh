#!/usr/bin/env bash
# The mTLS rejection matrix, keys in the token on both sides. The server
# (`s_server -Verify 1 -verify_return_error`) refuses a client certificate
# that is expired, not yet valid, issued for servers only (extendedKeyUsage
# serverAuth), or revoked (a CRL: s_server -CRL -crl_check); the client (`s_client
# -verify_return_error`) refuses a server certificate for another name
# (-verify_hostname), an expired one, and one issued for clients only. Each
# case checks the verification error on the side that refused and the alert
# on the other side, in TLS 1.3 and 1.2, and that the server never serves its
# page. A valid certificate passes the same checks (so the refusals are for
# the reason named, not for the setup). mtls_refuse.sh covers clients without
# a certificate and certificates from another CA.
#
# Dates the test CA cannot set with `x509 -req` (backdated, postdated) come
# from `openssl ca -startdate/-enddate` with the fixture's CA key.
. "$(dirname "$0")/../lib/common.sh"

setup_test
new_token mtls-a

enroll srv ec:P-256 server
enroll cli ec:P-256 client
enroll srvonly ec:P-256 server # a key whose certificate says serverAuth only

# A minimal `openssl ca` on the fixture's CA, its database in $WORK.
mkdir -p "$WORK/ca/new"
: >"$WORK/ca/index.txt"
echo 1000 >"$WORK/ca/serial"
echo 1000 >"$WORK/ca/crlnumber"
cat >"$WORK/ca/ca.cnf" <<EOF
[ca]
default_ca = test_ca
[test_ca]
dir = $WORK/ca
database = \$dir/index.txt
new_certs_dir = \$dir/new
serial = \$dir/serial
crlnumber = \$dir/crlnumber
certificate = $MTLSKS_FIXTURE/ca.pem
private_key = $MTLSKS_FIXTURE/ca.key
default_md = sha256
default_crl_days = 2
policy = policy_any
copy_extensions = copy
unique_subject = no
x509_extensions = leaf
[policy_any]
commonName = supplied
organizationName = optional
[leaf]
basicConstraints = critical,CA:FALSE
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
EOF

# ca_issue CSR OUT START END: a certificate valid from START to END
# (YYYYMMDDHHMMSSZ).
ca_issue() {
    run_ok "ca-issue-$(basename "$2")" plain_ossl ca -batch -notext -config "$WORK/ca/ca.cnf" \
        -in "$1" -out "$2" -startdate "$3" -enddate "$4"
}
now_plus() { date -u -d "$1" +%Y%m%d%H%M%SZ; }

VALID_FROM=$(now_plus '-1 hour')
VALID_TO=$(now_plus '+1 day')
ca_issue "$WORK/srv.csr" "$WORK/srv.pem" "$VALID_FROM" "$VALID_TO"
ca_issue "$WORK/cli.csr" "$WORK/cli.pem" "$VALID_FROM" "$VALID_TO"
ca_issue "$WORK/cli.csr" "$WORK/cli-expired.pem" 20200101000000Z 20200201000000Z
ca_issue "$WORK/cli.csr" "$WORK/cli-future.pem" "$(now_plus '+30 days')" "$(now_plus '+60 days')"
ca_issue "$WORK/srvonly.csr" "$WORK/srvonly.pem" "$VALID_FROM" "$VALID_TO"
ca_issue "$WORK/cli.csr" "$WORK/cli-revoked.pem" "$VALID_FROM" "$VALID_TO"
ca_issue "$WORK/srv.csr" "$WORK/srv-expired.pem" 20200101000000Z 20200201000000Z
ca_issue "$WORK/cli.csr" "$WORK/cli-as-server.pem" "$VALID_FROM" "$VALID_TO"
run_ok revoke plain_ossl ca -config "$WORK/ca/ca.cnf" -revoke "$WORK/cli-revoked.pem" -crl_reason keyCompromise
run_ok gencrl plain_ossl ca -config "$WORK/ca/ca.cnf" -gencrl -out "$WORK/crl.pem"

# The certificates say what the cases need.
run_ok eku-srvonly plain_ossl x509 -in "$WORK/srvonly.pem" -noout -ext extendedKeyUsage
assert_grep "$WORK/eku-srvonly.out" 'TLS Web Server Authentication' "srvonly.pem: no serverAuth EKU"
assert_no_grep "$WORK/eku-srvonly.out" 'Client Authentication' "srvonly.pem: has clientAuth"
run_ok eku-cli plain_ossl x509 -in "$WORK/cli-as-server.pem" -noout -ext extendedKeyUsage
assert_no_grep "$WORK/eku-cli.out" 'Server Authentication' "cli-as-server.pem: has serverAuth"
run_ok crl-text plain_ossl crl -in "$WORK/crl.pem" -noout -text
assert_grep "$WORK/crl-text.out" "Serial Number: $(plain_ossl x509 -in "$WORK/cli-revoked.pem" -noout -serial | sed 's/^serial=//')" \
    "the CRL does not list cli-revoked.pem"

# exchange STEP TLSVER SRV_CERT SRV_KEY CLI_CERT CLI_KEY: one connection;
# extra server arguments in SRV_ARGS, client arguments in CLI_ARGS. Sets
# CLIENT_RC and SERVER_RC; logs in $WORK/STEP.{server,client}.log.
SRV_ARGS=()
CLI_ARGS=()
exchange() {
    local step=$1 ver=$2
    CLIENT_RC=0
    start_server "$WORK/$step.server.log" env OPENSSL_CONF="$TOKEN_CNF" "${VALGRIND[@]}" \
        openssl s_server -accept 127.0.0.1:0 -naccept 1 -www -Verify 1 -verify_return_error \
        -cert "$3" -key "$4" -CAfile "$MTLSKS_FIXTURE/ca.pem" "${SRV_ARGS[@]}"
    local spid=$SERVER_PID
    printf 'GET / HTTP/1.0\r\n\r\n' | timeout 60 env OPENSSL_CONF="$TOKEN_CNF" "${VALGRIND[@]}" \
        openssl s_client -connect "127.0.0.1:$SERVER_PORT" "-tls$ver" -cert "$5" -key "$6" \
        -CAfile "$MTLSKS_FIXTURE/ca.pem" -verify_return_error -ign_eof "${CLI_ARGS[@]}" \
        >"$WORK/$step.client.log" 2>&1 || CLIENT_RC=$?
    wait_pid "$spid" 60 || fail "$step: server still running 60 s after the client finished"
    SERVER_RC=$WAIT_RC
    [ "$CLIENT_RC" -le 125 ] || fail "$step: s_client crashed (exit $CLIENT_RC)"
    [ "$SERVER_RC" -le 125 ] || fail "$step: s_server crashed (exit $SERVER_RC)"
}

show_logs() {
    sed 's/^/    client| /' "$WORK/$1.client.log" >&2
    sed 's/^/    server| /' "$WORK/$1.server.log" >&2
}

# accepted STEP TLSVER SRV_CERT SRV_KEY CLI_CERT CLI_KEY: the control case.
accepted() {
    local step=$1
    exchange "$@"
    if [ "$CLIENT_RC" -ne 0 ] || ! grep -q '^Client certificate$' "$WORK/$step.client.log"; then
        show_logs "$step"
        fail "$step: the valid certificate was refused (client exit $CLIENT_RC)"
    fi
    assert_grep "$WORK/$step.client.log" '^ *Verify return code: 0 \(ok\)' "$step: client verification"
    note "$step: accepted"
}

# refused_by_server STEP TLSVER CLI_CERT CLI_KEY REASON ALERT: the server
# refuses the client's certificate for REASON (its verify error), says so in
# its log and sends the TLS alert ALERT, which the client reports; the page is
# never served.
refused_by_server() {
    local step=$1 ver=$2 cert=$3 key=$4 reason=$5 alert=$6
    exchange "$step" "$ver" "$WORK/srv.pem" "$WORK/srv.key.pem" "$cert" "$key"
    if [ "$CLIENT_RC" -eq 0 ] || grep -q '^Client certificate$' "$WORK/$step.client.log"; then
        show_logs "$step"
        fail "$step: the server accepted a client certificate it must refuse ($reason)"
    fi
    assert_grep "$WORK/$step.server.log" "verify error:num=[0-9]+:$reason" \
        "$step: the server's log does not give the reason '$reason'"
    assert_grep "$WORK/$step.server.log" 'certificate verify failed' \
        "$step: the server's log does not say the handshake failed on verification"
    assert_grep "$WORK/$step.client.log" "alert $alert" "$step: the client does not report the alert '$alert'"
    assert_no_grep "$WORK/$step.client.log" 'HTTP/1.0 200' "$step: the server served its page"
    note "$step: refused by the server: $reason; client: $(grep -Eo '[a-z0-9]+ alert [a-z ]+' "$WORK/$step.client.log" | head -n1)"
}

# refused_by_client STEP TLSVER SRV_CERT SRV_KEY REASON ALERT: the client
# refuses the server's certificate for REASON and sends ALERT, which the
# server reports.
refused_by_client() {
    local step=$1 ver=$2 cert=$3 key=$4 reason=$5 alert=$6
    exchange "$step" "$ver" "$cert" "$key" "$WORK/cli.pem" "$WORK/cli.key.pem"
    if [ "$CLIENT_RC" -eq 0 ]; then
        show_logs "$step"
        fail "$step: the client accepted a server certificate it must refuse ($reason)"
    fi
    assert_grep "$WORK/$step.client.log" "verify error:num=[0-9]+:$reason" \
        "$step: the client's output does not give the reason '$reason'"
    assert_grep "$WORK/$step.client.log" 'certificate verify failed' \
        "$step: the client does not say the handshake failed on verification"
    assert_grep "$WORK/$step.server.log" "alert $alert" "$step: the server does not report the alert '$alert'"
    assert_no_grep "$WORK/$step.client.log" 'HTTP/1.0 200' "$step: a page was served"
    note "$step: refused by the client: $reason; server: $(grep -Eo '[a-z0-9]+ alert [a-z ]+' "$WORK/$step.server.log" | head -n1)"
}

for ver in 1_3 1_2; do
    SRV_ARGS=(-CRL "$WORK/crl.pem" -crl_check)
    CLI_ARGS=(-verify_hostname srv.test)
    accepted "valid-tls$ver" "$ver" "$WORK/srv.pem" "$WORK/srv.key.pem" "$WORK/cli.pem" "$WORK/cli.key.pem"
    refused_by_server "revoked-tls$ver" "$ver" "$WORK/cli-revoked.pem" "$WORK/cli.key.pem" \
        'certificate revoked' 'certificate revoked'
    SRV_ARGS=()
    CLI_ARGS=()
    refused_by_server "expired-tls$ver" "$ver" "$WORK/cli-expired.pem" "$WORK/cli.key.pem" \
        'certificate has expired' 'certificate expired'
    refused_by_server "not-yet-valid-tls$ver" "$ver" "$WORK/cli-future.pem" "$WORK/cli.key.pem" \
        'certificate is not yet valid' 'bad certificate'
    # The serverAuth-only certificate of another token key, as a client.
    refused_by_server "server-eku-as-client-tls$ver" "$ver" "$WORK/srvonly.pem" \
        "$WORK/srvonly.key.pem" 'unsuitable certificate purpose' 'unsupported certificate'

    CLI_ARGS=(-verify_hostname wrong-name.test)
    refused_by_client "wrong-name-tls$ver" "$ver" "$WORK/srv.pem" "$WORK/srv.key.pem" 'hostname mismatch' \
        'bad certificate'
    CLI_ARGS=()
    refused_by_client "server-expired-tls$ver" "$ver" "$WORK/srv-expired.pem" "$WORK/srv.key.pem" \
        'certificate has expired' 'certificate expired'
    refused_by_client "client-eku-as-server-tls$ver" "$ver" "$WORK/cli-as-server.pem" \
        "$WORK/cli.key.pem" 'unsuitable certificate purpose' 'unsupported certificate'
done
note "rejection matrix: ok"
