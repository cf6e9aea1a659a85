#!/usr/bin/env bash
# `show` and `delete`. show: key type, URI, certificate subject, SANs,
# issuer, validity, in text and JSON (stable field names), also without a PIN
# (public half only); a label on two tokens needs --token. delete: refuses
# without a terminal unless --yes (exit 2, nothing touched), asks on a
# terminal (n keeps, y deletes), removes key pair, certificate and chain,
# needs the PIN (no private key left behind unseen), says what a renewal left.
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/lifecycle.sh"

setup_test
require_cmd pkcs11-tool python3
new_token mtls-a mtls-b

enroll web ec:P-384 server
ca_sign "$WORK/web.csr" "$WORK/web.pem"
run_ok import-web mks import-cert --label web "$WORK/web.pem"

# --- show ----------------------------------------------------------------------------
run_ok show mks show --label web
for re in "^web  \(token 'mtls-a'\)" '^  private key +ec P-384, id [0-9a-f]{40}$' \
    '^    uri +pkcs11:.*object=web;type=private$' '^  certificate +CN=web,O=mtls-keystore tests$' \
    '^    issuer +.*CN=mtls-keystore test CA' '^    SANs +DNS:web.test, DNS:localhost, IP:127.0.0.1$' \
    '^    valid +[0-9-]+T[0-9:]+Z to [0-9-]+T[0-9:]+Z \([12] days left\)$' '^    ext. usage +serverAuth$'; do
    assert_grep "$WORK/show.out" "$re" "show: no line /$re/"
done

run_ok show-json mks show --label web --json
j=$WORK/show-json.out
assert_eq "$(json_eval "$j" 'sorted(d.keys())')" \
    "['certificates', 'chain', 'keys', 'label', 'pending', 'retired', 'token', 'token_uri']" "show --json: fields"
assert_eq "$(json_eval "$j" 'sorted(d["keys"][0].keys())')" \
    "['bits', 'class', 'curve', 'id', 'key_type', 'label', 'uri']" "show --json: key fields"
assert_eq "$(json_eval "$j" 'sorted(d["certificates"][0].keys())')" \
    "['bits', 'ca', 'class', 'curve', 'days_left', 'extended_key_usage', 'id', 'issuer', 'key_type', 'key_usage', 'label', 'not_after', 'not_before', 'sans', 'seconds_left', 'serial', 'sha256', 'subject', 'uri']" \
    "show --json: certificate fields"
assert_eq "$(json_eval "$j" '[(k["class"], k["key_type"], k["curve"], k["bits"]) for k in d["keys"]]')" \
    "[('private-key', 'ec', 'P-384', 384), ('public-key', 'ec', 'P-384', 384)]" "show --json: keys"
c="d['certificates'][0]"
assert_eq "$(json_eval "$j" "${c}['subject'], ${c}['sans'], ${c}['extended_key_usage'], ${c}['key_usage'], ${c}['ca']")" \
    "('CN=web,O=mtls-keystore tests', ['DNS:web.test', 'DNS:localhost', 'IP:127.0.0.1'], ['serverAuth'], ['digitalSignature'], False)" \
    "show --json: certificate"
fp=$(plain_ossl x509 -in "$WORK/web.pem" -noout -fingerprint -sha256 | sed 's/.*=//; s/://g' | tr 'A-F' 'a-f')
assert_eq "$(json_eval "$j" "${c}['sha256'], ${c}['not_after'].endswith('Z'), ${c}['id'] == d['keys'][0]['id']")" \
    "('$fp', True, True)" "show --json: fingerprint, dates, id"
assert_eq "$(json_eval "$j" 'd["keys"][0]["uri"]')" "$ENROLL_URI" "show --json: the key's URI is enroll's"

# Without a PIN: the public half and the certificate.
run_ok show-nopin env OPENSSL_CONF="$TOKEN_CNF_NOPIN" "$MTLSKS_CLI" show --label web --json
assert_eq "$(json_eval "$WORK/show-nopin.out" '[k["class"] for k in d["keys"]], len(d["certificates"])')" \
    "(['public-key'], 1)" "show without a PIN"
run_rc show-missing 1 mks show --label nope
assert_grep "$WORK/show-missing.err" "nope" "show of a missing label: message"

# The same label on two tokens: --token chooses.
cp "$WORK/web.key.pem" "$WORK/web-a.key.pem"
TOKEN_LABEL=mtls-b enroll web ec:P-256 client --force
run_rc show-two 1 mks show --label web
assert_grep "$WORK/show-two.err" "mtls-a.*mtls-b|mtls-b.*mtls-a" "a label on two tokens: message names both"
run_ok show-b mks show --label web --token mtls-b --json
assert_eq "$(json_eval "$WORK/show-b.out" 'd["token"], d["keys"][0]["curve"], d["certificates"]')" \
    "('mtls-b', 'P-256', [])" "show --token mtls-b"

# --- delete ---------------------------------------------------------------------------
before=$(count_objects mtls-a)
run_rc delete-notty 2 mks delete --label web --token mtls-a
assert_grep "$WORK/delete-notty.err" '--yes' "delete without a terminal: message"
assert_eq "$(count_objects mtls-a)" "$before" "objects after delete without a terminal"
run_rc delete-two 1 mks delete --label web --yes
assert_eq "$(count_objects mtls-a)" "$before" "objects after an ambiguous delete"

on_tty $'n\n' env OPENSSL_CONF="$TOKEN_CNF" "$MTLSKS_CLI" delete --label web --token mtls-a \
    >"$WORK/delete-no.log" 2>&1 && fail "delete answered 'n' exited 0"
assert_grep "$WORK/delete-no.log" 'Delete these 3 objects from token .mtls-a.\?' "delete: the question"
assert_grep "$WORK/delete-no.log" 'Nothing deleted' "delete answered 'n': message"
assert_eq "$(count_objects mtls-a)" "$before" "objects after delete answered 'n'"

run_rc delete-nopin 1 env OPENSSL_CONF="$TOKEN_CNF_NOPIN" "$MTLSKS_CLI" delete --label web \
    --token mtls-a --yes
assert_grep "$WORK/delete-nopin.err" 'PIN' "delete without a PIN: message"
assert_eq "$(count_objects mtls-a)" "$before" "objects after delete without a PIN"

on_tty $'y\n' env OPENSSL_CONF="$TOKEN_CNF" "$MTLSKS_CLI" delete --label web --token mtls-a \
    >"$WORK/delete-yes.log" 2>&1 || {
    sed 's/^/    | /' "$WORK/delete-yes.log" >&2
    fail "delete answered 'y' failed"
}
assert_grep "$WORK/delete-yes.log" "deleted: 3 objects labelled 'web'" "delete answered 'y': message"
assert_eq "$(count_label web)" 0 "objects labelled web on mtls-a after delete"
run_fails keyref-after-delete ossl pkey -in "$WORK/web-a.key.pem" -pubout
TOKEN_LABEL=mtls-b
assert_eq "$(count_label web)" 2 "objects labelled web on mtls-b (untouched)"
TOKEN_LABEL=mtls-a
run_rc delete-missing 1 mks delete --label web --token mtls-a --yes

# delete takes the chain; a pending renewal stays and is named.
make_intermediate ica
enroll app ec:P-256 client
ca_sign_days "$WORK/app.csr" "$WORK/app.pem" 2 "$WORK/ica.pem" "$WORK/ica.key"
run_ok import-app mks import-cert --label app --chain "$WORK/ica.pem" "$WORK/app.pem"
run_ok renew-app mks renew --label app --out "$WORK/app-next.csr"
assert_eq "$(count_label app.chain)" 1 "chain certificates of app"
run_ok delete-app mks delete --label app --yes
assert_eq "$(count_label app)/$(count_label app.chain)/$(count_label app.next)" "0/0/2" \
    "objects labelled app, app.chain, app.next after delete"
assert_grep "$WORK/delete-app.out" "'app.next' \(a pending renewal\)" "delete: the pending renewal is not named"
run_ok delete-app-next mks delete --label app.next --yes
assert_eq "$(count_label app.next)" 0 "objects labelled app.next after deleting it"

run_rc delete-usage 2 mks delete --yes
note "show and delete: ok"
