#!/usr/bin/env bash
# A key-reference file that is damaged inside its armour (the DER cut short,
# BEGIN and END lines intact) or that lacks its END line is refused with the
# same reason by every reader: the CLI and OpenSSL's own programs (openssl
# pkey, s_server) name the file's problem, not "unsupported".
. "$(dirname "$0")/../lib/common.sh"

setup_test
new_token mtls-a
enroll web ec:P-256 server

# DER cut short: keep the armour, drop the last third of the base64 body
# (re-wrapped so that the base64 itself stays well-formed).
python3 - "$WORK/web.key.pem" "$WORK/short.key.pem" <<'PY'
import base64, sys
lines = open(sys.argv[1]).read().split("\n")
body = [l for l in lines if l and not l.startswith("-----")]
der = base64.b64decode("".join(body))
cut = base64.b64encode(der[: len(der) * 2 // 3]).decode()
with open(sys.argv[2], "w") as f:
    f.write("-----BEGIN PKCS#11 PROVIDER URI-----\n")
    f.write("\n".join(cut[i : i + 64] for i in range(0, len(cut), 64)) + "\n")
    f.write("-----END PKCS#11 PROVIDER URI-----\n")
PY
head -n -1 "$WORK/web.key.pem" >"$WORK/noend.key.pem"

for f in noend short; do
    run_fails "pkey-$f" ossl pkey -in "$WORK/$f.key.pem" -pubout
    assert_grep "$WORK/pkey-$f.err" 'key reference|PKCS#11 PROVIDER URI' \
        "openssl pkey on a damaged key reference ($f): the reason"
    run_fails "csr-$f" mks csr --key "$WORK/$f.key.pem" --subject CN=x --out "$WORK/$f.csr"
    assert_no_file "$WORK/$f.csr" "csr from a damaged key reference ($f): CSR left behind"
done
assert_no_grep "$WORK/pkey-short.err" 'unsupported' "openssl pkey (DER cut short) says only 'unsupported'"
assert_grep "$WORK/pkey-short.err" 'malformed DER.*damaged or cut short' \
    "openssl pkey (DER cut short): names the damage"
assert_grep "$WORK/csr-short.err" 'malformed DER.*damaged or cut short' \
    "mtls-keystore csr (DER cut short): names the damage"

# openssl s_server reads the same file and stops with the same reason.
ca_sign "$WORK/web.csr" "$WORK/web.pem"
run_fails s_server-short ossl s_server -accept 127.0.0.1:0 -naccept 1 -cert "$WORK/web.pem" \
    -key "$WORK/short.key.pem"
assert_grep "$WORK/s_server-short.err" 'malformed DER' "s_server (DER cut short): the reason"
