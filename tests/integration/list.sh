#!/usr/bin/env bash
# `mtls-keystore list` shows the tokens with the index that --slot takes, and
# the keys and certificates with their URIs; `list --json` says the same as
# JSON. `enroll --slot N` puts the key on the token listed at index N (SoftHSM
# renumbers slots when it initialises a token, so N is not a slot ID), and the
# order is stable from one run to the next.
. "$(dirname "$0")/../lib/common.sh"

setup_test
require_cmd pkcs11-tool
new_token mtls-a mtls-b

run_ok list-empty mks list
assert_grep "$WORK/list-empty.out" 'mtls-a' "list does not show token mtls-a"
assert_grep "$WORK/list-empty.out" 'mtls-b' "list does not show token mtls-b"

# --slot N: the N-th usable slot in list's order.
for n in 0 1; do
    run_ok "enroll-slot$n" mks enroll --slot "$n" --label "key$n" --subject "CN=key$n" \
        --usage client --out "$WORK/key$n.csr" --key-ref "$WORK/key$n.key.pem"
done
on_token() {
    p11tool_ --token-label "$1" --login --pin "$TEST_PIN" --list-objects --type privkey 2>/dev/null |
        grep -Eq "^ *label: *$2\$"
}
tok0='' tok1=''
for t in mtls-a mtls-b; do
    on_token "$t" key0 && tok0=$t
    on_token "$t" key1 && tok1=$t
done
[ -n "$tok0" ] || fail "enroll --slot 0 made no key on either token"
[ -n "$tok1" ] || fail "enroll --slot 1 made no key on either token"
[ "$tok0" != "$tok1" ] || fail "--slot 0 and --slot 1 both went to token $tok0"
note "--slot 0 is $tok0, --slot 1 is $tok1"

ca_sign "$WORK/key0.csr" "$WORK/key0.pem"
run_ok import mks import-cert --label key0 "$WORK/key0.pem"

run_ok list mks list
L=$WORK/list.out
assert_grep "$L" 'key0' "list does not show key0"
assert_grep "$L" 'key1' "list does not show key1"
assert_grep "$L" "pkcs11:[^[:space:]]*token=${tok0}[^[:space:]]*object=key0" "list shows no URI for key0"
assert_grep "$L" "pkcs11:[^[:space:]]*object=key0[^[:space:]]*type=cert" "list shows no URI for key0's certificate"
# The index --slot takes, heading the block of each token ("Slot N: ...").
index_of() {
    awk -v t="'$1'" '/^Slot [0-9]+:/ { cur = $2; sub(":", "", cur) } /^Slot/ && !/^Slot [0-9]+:/ { cur = "" }
        /^  token / && index($0, t) && cur != "" { print cur; exit }' "$L"
}
assert_eq "$(index_of "$tok0")" 0 "index list shows for token $tok0 (where --slot 0 made key0)"
assert_eq "$(index_of "$tok1")" 1 "index list shows for token $tok1 (where --slot 1 made key1)"

run_ok list-again mks list
assert_same_file "$WORK/list.out" "$WORK/list-again.out" "list output changes from one run to the next"

# A URI that list prints opens the key.
uri0=$(grep -Eo "pkcs11:[^[:space:]\"]*object=key0[^[:space:]\"]*type=private[^[:space:]\"]*" "$L" | head -n1 || true)
[ -n "$uri0" ] || fail "list prints no type=private URI for key0"
run_ok pubout ossl pkey -in "$uri0" -pubout -out "$WORK/key0.fromlist.pub.pem"
spki_of_csr "$WORK/key0.csr" "$WORK/key0.csr.pub.pem"
assert_same_file "$WORK/key0.csr.pub.pem" "$WORK/key0.fromlist.pub.pem" "key behind list's URI for key0"

run_ok list-json mks list --json
J=$WORK/list-json.out
assert_grep "$J" '^[[:space:]]*[[{]' "list --json does not start with a JSON value"
for s in mtls-a mtls-b key0 key1 'type=cert'; do
    assert_grep "$J" "$s" "list --json does not mention $s"
done
if command -v python3 >/dev/null 2>&1; then
    # Valid JSON, and the same index for each token as the text listing.
    python3 - "$J" "$tok0" "$tok1" >"$WORK/json-check.out" 2>&1 <<'PY' || {
import json, sys
doc = json.load(open(sys.argv[1]))
idx = {}
for slot in doc["slots"]:
    idx[slot["token"]["label"]] = slot["index"]
for want, label in ((0, sys.argv[2]), (1, sys.argv[3])):
    if idx.get(label) != want:
        sys.exit("token %r: index %r in list --json, expected %d (all: %r)" % (label, idx.get(label), want, idx))
PY
        sed 's/^/    | /' "$WORK/json-check.out" >&2
        fail "list --json: not valid JSON, or the slot indexes differ from enroll --slot"
    }
else
    note "python3 missing: JSON syntax not checked"
fi

# The uninitialised slot SoftHSM always adds: listed apart, with a URI that
# names only the attributes its token has (no empty "serial=;token=").
assert_grep "$J" '"unusable_slots":\[\{' "list --json shows no unusable slot (SoftHSM's uninitialised one)"
assert_grep "$J" '"reason":"token not initialized"' "list --json: no uninitialised slot"
assert_no_grep "$J" '(token|serial|model|manufacturer)=(;|")' "list --json: a URI with an empty attribute"
run_ok list-public mks list --public --json
assert_grep "$WORK/list-public.out" '"private_keys_listed":false' "list --public --json: private_keys_listed"
assert_no_grep "$WORK/list-public.out" '"class":"private-key"' "list --public --json lists a private key"
assert_grep "$WORK/list-public.out" '"label":"key0"' "list --public --json: no key0 (its public key or certificate)"
