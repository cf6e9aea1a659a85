# shellcheck shell=bash
#
# Helpers for the lifecycle tests (tests/integration/lifecycle_*.sh):
# certificates with chosen lifetimes, an intermediate CA, counting objects by
# label, reading --json output. Source after common.sh.

# ca_sign_days CSR OUT DAYS [CA_PEM CA_KEY]: a certificate valid for DAYS days
# from now, issued by the fixture CA (or CA_PEM/CA_KEY), copying the
# extensions the CSR asks for.
ca_sign_days() {
    local csr=$1 out=$2 days=$3 ca=${4:-$MTLSKS_FIXTURE/ca.pem} cakey=${5:-$MTLSKS_FIXTURE/ca.key}
    local serial
    serial=$(od -An -tx1 -N8 /dev/urandom | tr -d ' \n')
    run_ok "ca-sign-$(basename "$out")" plain_ossl x509 -req -in "$csr" \
        -CA "$ca" -CAkey "$cakey" -set_serial "0x7$serial" -days "$days" \
        -copy_extensions copyall -extfile "$MTLSKS_FIXTURE/leaf.ext" -extensions leaf -out "$out"
}

# make_intermediate NAME: an intermediate CA issued by the fixture CA:
# $WORK/NAME.pem, $WORK/NAME.key.
make_intermediate() {
    local name=$1
    printf '%s\n' "[ica]" "basicConstraints = critical,CA:TRUE,pathlen:0" \
        "keyUsage = critical,keyCertSign,cRLSign" "subjectKeyIdentifier = hash" \
        "authorityKeyIdentifier = keyid:always" >"$WORK/$name.ext"
    run_ok "ica-req-$name" plain_ossl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$WORK/$name.key" -subj "/CN=$name/O=mtls-keystore tests" -out "$WORK/$name.csr"
    run_ok "ica-sign-$name" plain_ossl x509 -req -in "$WORK/$name.csr" \
        -CA "$MTLSKS_FIXTURE/ca.pem" -CAkey "$MTLSKS_FIXTURE/ca.key" -set_serial 0x1234 -days 3 \
        -extfile "$WORK/$name.ext" -extensions ica -out "$WORK/$name.pem"
}

# count_label LABEL [TYPE]: objects labelled exactly LABEL on $TOKEN_LABEL, as
# pkcs11-tool sees them after login (TYPE: privkey, pubkey, cert; default all).
count_label() {
    local label=$1 type=${2:-} args=()
    [ -n "$type" ] && args=(--type "$type")
    p11tool_ --token-label "$TOKEN_LABEL" --login --pin "$TEST_PIN" --list-objects "${args[@]}" \
        2>/dev/null | awk -v l="$label" '/^ *label: */ { sub(/^ *label: */, ""); if ($0 == l) n++ } END { print n + 0 }'
}

# json_eval FILE EXPR: evaluates the Python expression EXPR with `d` bound to
# the JSON document in FILE; prints the result.
json_eval() {
    python3 -c 'import json, sys
d = json.load(open(sys.argv[1]))
print(eval(sys.argv[2]))' "$1" "$2"
}

# spki_hash CERT_OR_CSR: SHA-256 of the public key in a certificate or CSR.
spki_hash() {
    if grep -q 'CERTIFICATE REQUEST' "$1"; then
        plain_ossl req -in "$1" -noout -pubkey
    else
        plain_ossl x509 -in "$1" -noout -pubkey
    fi | plain_ossl pkey -pubin -outform DER | sha256sum | cut -d' ' -f1
}

# keyref_uri FILE: the URI inside a key reference file.
keyref_uri() {
    plain_ossl asn1parse -in "$1" | sed -n 's/.*UTF8STRING *://p' | head -n1
}

# on_tty INPUT CMD...: runs CMD with standard input a pseudo-terminal that
# receives INPUT; its output goes to stdout. Exit status: CMD's.
on_tty() {
    local input=$1
    shift
    python3 - "$input" "$@" <<'PY'
import os, pty, subprocess, sys, time
data = sys.argv[1].encode()
master, slave = pty.openpty()
p = subprocess.Popen(sys.argv[2:], stdin=slave, stdout=sys.stdout, stderr=sys.stdout)
os.close(slave)
time.sleep(0.5)
os.write(master, data)
try:
    rc = p.wait(timeout=60)
except subprocess.TimeoutExpired:
    p.kill()
    rc = 124
os.close(master)
sys.exit(rc)
PY
}
