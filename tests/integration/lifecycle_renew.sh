#!/usr/bin/env bash
# Key renewal on SoftHSM, as an operator runs it:
#   renew --label srv --out srv-next.csr        (new key pair srv.next, CSR)
#   ... the CA signs ...
#   import-cert --label srv --key-ref srv.key.pem --cert-out srv.crt NEW.pem
# Checks: the CSR carries the certificate's subject, SANs and usage and the
# new key; between renew and import (an interrupted renewal) the old key and
# certificate still serve, and `object=srv;type=private` names one key; a
# server started before the hand-over keeps signing through it; afterwards
# the key reference and certificate file name the new pair, which serves,
# and the old pair is srv.old; import-cert repeated changes nothing; a second
# renewal replaces srv.old; RSA keys renew as RSA; renew --same-key replaces
# only the certificate; --chain stores the intermediate on the token, where
# s_server loads it, and --cert-out writes the full chain.
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/lifecycle.sh"

setup_test
require_cmd pkcs11-tool python3
new_token mtls-a

enroll srv ec:P-256 server
enroll cli ec:P-256 client
ca_sign "$WORK/srv.csr" "$WORK/srv.pem"
ca_sign "$WORK/cli.csr" "$WORK/cli.pem"
run_ok import-srv mks import-cert --label srv --key-ref "$WORK/srv.key.pem" \
    --cert-out "$WORK/srv.crt" "$WORK/srv.pem"
run_ok import-cli mks import-cert --label cli "$WORK/cli.pem"
assert_eq "$(file_mode "$WORK/srv.key.pem")" 600 "key reference mode after import-cert --key-ref"
cp "$WORK/srv.key.pem" "$WORK/srv.key.gen1.pem"
cp "$WORK/srv.crt" "$WORK/srv.gen1.crt"
tls_handshake before 1_3 "$WORK/srv.crt" "$WORK/srv.key.pem" "$WORK/cli.pem" "$WORK/cli.key.pem"

# --- renew: a pending key pair and its CSR; nothing that serves changes --------
run_ok renew mks renew --label srv --out "$WORK/srv-next.csr"
assert_grep "$WORK/renew.out" '^pending: pkcs11:.*object=srv\.next;type=private' "renew: the pending key's URI"
run_ok csr-verify plain_ossl req -in "$WORK/srv-next.csr" -verify -noout
subject() { plain_ossl "$1" -in "$2" -noout -subject -nameopt RFC2253 | sed 's/^subject=//'; }
ext() { plain_ossl "$1" -in "$2" -noout -text | grep -A1 "$3" | tail -n1 | sed 's/^ *//'; }
assert_eq "$(subject req "$WORK/srv-next.csr")" "$(subject x509 "$WORK/srv.pem")" "CSR subject vs the certificate's"
assert_eq "$(ext req "$WORK/srv-next.csr" 'Subject Alternative Name')" \
    "$(ext x509 "$WORK/srv.pem" 'Subject Alternative Name')" "CSR SANs vs the certificate's"
assert_eq "$(ext req "$WORK/srv-next.csr" 'Extended Key Usage')" "TLS Web Server Authentication" "CSR EKU"
[ "$(spki_hash "$WORK/srv-next.csr")" != "$(spki_hash "$WORK/srv.pem")" ] ||
    fail "renew: the CSR carries the current key, not a new one"
assert_eq "$(count_label srv privkey)" 1 "private keys labelled srv while a renewal is pending"
assert_eq "$(count_label srv.next privkey)" 1 "private keys labelled srv.next"
assert_eq "$(count_label srv.next cert)" 0 "certificates labelled srv.next before import"

# Interrupted between CSR and import: the old pair serves as before, by key
# reference and by label alone.
assert_same_file "$WORK/srv.key.pem" "$WORK/srv.key.gen1.pem" "renew changed the key reference"
tls_handshake pending 1_3 "$WORK/srv.crt" "$WORK/srv.key.pem" "$WORK/cli.pem" "$WORK/cli.key.pem"
tls_handshake pending-uri 1_2 "$(cert_uri srv)" "$(key_uri srv)" "$WORK/cli.pem" "$WORK/cli.key.pem"
run_ok show-pending mks show --label srv --json
assert_eq "$(json_eval "$WORK/show-pending.out" 'd["pending"]["label"], [k["class"] for k in d["pending"]["keys"]], d["retired"]')" \
    "('srv.next', ['private-key', 'public-key'], None)" "show --json while a renewal is pending"

# Run again, renew reuses the pending key; an existing --out needs --force.
run_rc renew-exists 1 mks renew --label srv --out "$WORK/srv-next.csr"
run_ok renew-again mks renew --label srv --out "$WORK/srv-next.csr" --force
assert_grep "$WORK/renew-again.out" 'reused' "renew again: the pending key is not reused"
assert_eq "$(count_label srv.next privkey)" 1 "private keys labelled srv.next after renew again"

# --- hand-over, with a server running on the old key ---------------------------
ca_sign "$WORK/srv-next.csr" "$WORK/srv2.pem"
chmod 640 "$WORK/srv.key.pem" # as if a service's group reads it
start_server "$WORK/running.server.log" env OPENSSL_CONF="$TOKEN_CNF" openssl s_server \
    -accept 127.0.0.1:0 -naccept 1 -www -Verify 1 -verify_return_error \
    -cert "$WORK/srv.gen1.crt" -key "$WORK/srv.key.gen1.pem" -CAfile "$MTLSKS_FIXTURE/ca.pem"
running_pid=$SERVER_PID
run_ok handover mks import-cert --label srv --key-ref "$WORK/srv.key.pem" --cert-out "$WORK/srv.crt" \
    "$WORK/srv2.pem"
assert_grep "$WORK/handover.out" "^retired: .*'srv\.old'" "import-cert: the old pair is not retired"
rc=0
printf 'GET / HTTP/1.0\r\n\r\n' | timeout 60 env OPENSSL_CONF="$TOKEN_CNF" openssl s_client \
    -connect "127.0.0.1:$SERVER_PORT" -tls1_3 -cert "$WORK/cli.pem" -key "$WORK/cli.key.pem" \
    -CAfile "$MTLSKS_FIXTURE/ca.pem" -verify_return_error -ign_eof >"$WORK/running.client.log" 2>&1 || rc=$?
wait_pid "$running_pid" 30 || fail "the running server did not finish"
if [ "$rc" -ne 0 ] || [ "$WAIT_RC" -ne 0 ] || ! grep -q '^ *Verify return code: 0 (ok)' "$WORK/running.client.log"; then
    sed 's/^/    client| /' "$WORK/running.client.log" >&2
    sed 's/^/    server| /' "$WORK/running.server.log" >&2
    fail "a server started before the hand-over could not sign after it (client $rc, server $WAIT_RC)"
fi
note "a server started on the old key kept serving through the hand-over"

assert_eq "$(count_label srv privkey)" 1 "private keys labelled srv after the hand-over"
assert_eq "$(count_label srv.old privkey)" 1 "private keys labelled srv.old"
assert_eq "$(count_label srv.next)" 0 "objects labelled srv.next after the hand-over"
assert_eq "$(spki_hash "$WORK/srv.crt")" "$(spki_hash "$WORK/srv-next.csr")" "--cert-out holds the new certificate"
new_uri=$(keyref_uri "$WORK/srv.key.pem")
case $new_uri in
*"object=srv;type=private") ;;
*) fail "the rewritten key reference names $new_uri" ;;
esac
[ "$new_uri" != "$(keyref_uri "$WORK/srv.key.gen1.pem")" ] || fail "the key reference still names the old key"
assert_eq "$(file_mode "$WORK/srv.key.pem")" 640 "rewritten key reference: the mode of the file it replaced"
assert_eq "$(file_mode "$WORK/srv.crt")" 644 "rewritten certificate file mode"
tls_handshake after 1_3 "$WORK/srv.crt" "$WORK/srv.key.pem" "$WORK/cli.pem" "$WORK/cli.key.pem"
tls_handshake after-uri 1_3 "$(cert_uri srv)" "$(key_uri srv)" "$WORK/cli.pem" "$WORK/cli.key.pem"
# The old key reference names the retired key (id + label srv): it finds
# nothing now, which is why import-cert rewrites key references.
run_fails old-keyref ossl pkey -in "$WORK/srv.key.gen1.pem" -pubout
run_ok show-after mks show --label srv --json
assert_eq "$(json_eval "$WORK/show-after.out" 'd["pending"], d["retired"]["label"], len(d["certificates"])')" \
    "(None, 'srv.old', 1)" "show --json after the hand-over"

# Repeated, import-cert changes nothing.
objects=$(count_objects "$TOKEN_LABEL")
run_ok import-again mks import-cert --label srv --key-ref "$WORK/srv.key.pem" "$WORK/srv2.pem"
# Without --cert-out, the certificate files servers read are not rewritten: said so.
assert_grep "$WORK/import-again.err" 'warning: --key-ref without --cert-out: certificate files .* still hold the previous certificate' \
    "import-cert --key-ref without --cert-out: no warning"
assert_grep "$WORK/import-again.err" "--cert-out FILE" "the warning does not say how to write the certificate file"
assert_eq "$(count_objects "$TOKEN_LABEL")" "$objects" "objects after importing the same certificate again"
assert_eq "$(keyref_uri "$WORK/srv.key.pem")" "$new_uri" "key reference after importing again"

# --- a second renewal: srv.old is the previous generation, not the first ---------
gen2_id=$(json_eval "$WORK/show-after.out" '[k["id"] for k in d["keys"] if k["class"] == "private-key"][0]')
# This time the hand-over follows renew's hint as printed, placeholders filled in.
run_ok renew2 mks renew --label srv --out "$WORK/srv-3.csr"
ca_sign "$WORK/srv-3.csr" "$WORK/srv3.pem"
hint=$(grep -A1 '^next:' "$WORK/renew2.out" | sed -n '2s/^ *//p')
case $hint in
"mtls-keystore import-cert "*" --key-ref KEY-REF.pem --cert-out SERVER.crt CERT.pem") ;;
*) fail "renew's hint does not rewrite the certificate file (--cert-out): $hint" ;;
esac
read -ra words <<<"${hint#mtls-keystore }"
args=()
for w in "${words[@]}"; do
    case $w in
    KEY-REF.pem) args+=("$WORK/srv.key.pem") ;;
    SERVER.crt) args+=("$WORK/srv.crt") ;;
    CERT.pem) args+=("$WORK/srv3.pem") ;;
    *) args+=("$w") ;;
    esac
done
run_ok handover2 mks "${args[@]}"
assert_no_grep "$WORK/handover2.err" 'warning' "import-cert as renew's hint says: a warning"
run_ok hint-cert-pub plain_ossl x509 -in "$WORK/srv.crt" -noout -pubkey
run_ok hint-key-pub ossl pkey -in "$WORK/srv.key.pem" -pubout
assert_eq "$(cat "$WORK/hint-cert-pub.out")" "$(cat "$WORK/hint-key-pub.out")" \
    "renew's hint followed: the certificate file and the key reference name different keys"
tls_handshake after-hint 1_3 "$WORK/srv.crt" "$WORK/srv.key.pem" "$WORK/cli.pem" "$WORK/cli.key.pem"
run_ok show-gen3 mks show --label srv --json
assert_eq "$(json_eval "$WORK/show-gen3.out" '[k["id"] for k in d["retired"]["keys"] if k["class"] == "private-key"]')" \
    "['$gen2_id']" "srv.old after the second renewal"
assert_eq "$(count_label srv.old)" 3 "objects labelled srv.old after the second renewal"

# --- RSA keys renew as RSA ----------------------------------------------------------
enroll rsa rsa:2048 client
ca_sign "$WORK/rsa.csr" "$WORK/rsa.pem"
run_ok import-rsa mks import-cert --label rsa "$WORK/rsa.pem"
run_ok renew-rsa mks renew --label rsa --out "$WORK/rsa-next.csr"
plain_ossl req -in "$WORK/rsa-next.csr" -noout -text >"$WORK/rsa-next.txt"
assert_grep "$WORK/rsa-next.txt" 'Public Key Algorithm: rsaEncryption' "renewed RSA key: algorithm"
assert_grep "$WORK/rsa-next.txt" 'Public-Key: \(2048 bit\)' "renewed RSA key: size"
assert_eq "$(ext req "$WORK/rsa-next.csr" 'Extended Key Usage')" "TLS Web Client Authentication" "RSA CSR EKU"

# --- same key, new certificate from an intermediate CA, with its chain -------------
make_intermediate ica
key_before=$(keyref_uri "$WORK/srv.key.pem")
run_ok renew-same mks renew --label srv --same-key --out "$WORK/srv-same.csr"
assert_eq "$(spki_hash "$WORK/srv-same.csr")" "$(spki_hash "$WORK/srv.crt")" "renew --same-key: the CSR's key"
assert_eq "$(count_label srv.next)" 0 "renew --same-key made a key"
ca_sign_days "$WORK/srv-same.csr" "$WORK/srv4.pem" 2 "$WORK/ica.pem" "$WORK/ica.key"
run_ok import-same mks import-cert --label srv --key-ref "$WORK/srv.key.pem" --chain "$WORK/ica.pem" \
    --cert-out "$WORK/srv.crt" "$WORK/srv4.pem"
assert_eq "$(count_label srv cert)" 1 "certificates labelled srv after a same-key renewal"
assert_eq "$(keyref_uri "$WORK/srv.key.pem")" "$key_before" "key reference after a same-key renewal"
assert_eq "$(count_label srv.chain cert)" 1 "chain certificates on the token"
assert_eq "$(grep -c 'BEGIN CERTIFICATE' "$WORK/srv.crt")" 2 "certificates in --cert-out"
csplit -s -z -f "$WORK/full." "$WORK/srv.crt" '/-----BEGIN CERTIFICATE-----/' '{*}'
run_ok verify-full plain_ossl verify -CAfile "$MTLSKS_FIXTURE/ca.pem" -untrusted "$WORK/full.01" "$WORK/full.00"
run_ok storeutl-chain ossl storeutl -certs "$(cert_uri srv.chain)"
assert_grep "$WORK/storeutl-chain.out" '^Total found: 1$' "storeutl: the chain on the token"
# The server sends the intermediate it loads from the token; the client trusts the root only.
tls_handshake chain 1_3 "$(cert_uri srv)" "$WORK/srv.key.pem" "$WORK/cli.pem" "$WORK/cli.key.pem" \
    -cert_chain "$(cert_uri srv.chain)"
# Importing again with the same chain stores nothing new.
objects=$(count_objects "$TOKEN_LABEL")
run_ok import-same-again mks import-cert --label srv --chain "$WORK/ica.pem" "$WORK/srv4.pem"
assert_eq "$(count_objects "$TOKEN_LABEL")" "$objects" "objects after importing the same chain again"

# A chain that is not a chain is refused before anything happens.
run_rc chain-not-ca 1 mks import-cert --label srv --chain "$WORK/cli.pem" "$WORK/srv4.pem"
assert_grep "$WORK/chain-not-ca.err" 'not a CA certificate' "--chain with a leaf certificate: message"
note "renewal: ok"
