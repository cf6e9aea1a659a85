#!/usr/bin/env bash
# Bash completion (completion/mtls-keystore), sourced and called the way bash
# calls it (COMP_WORDS, COMP_CWORD), against a real SoftHSM token behind the
# PKCS#11 shim, which counts calls:
# - `renew --label <TAB>` offers the token's key labels and costs no C_Login,
#   although the config names a PIN source (list --public never logs in),
#   while a plain `list` through the same shim does log in (the count can fail);
# - --label honours a --config given on the same line;
# - `renew --tpm --key-out <TAB>` offers files; `check --hook <TAB>` lists each
#   file once; after --tpm, --key-type offers no rsa:4096.
. "$(dirname "$0")/../lib/common.sh"

setup_test
[ -n "${MTLSKS_SHIM:-}" ] && [ -r "$MTLSKS_SHIM" ] || fail "PKCS#11 shim not built (MTLSKS_SHIM=${MTLSKS_SHIM:-})"
command -v python3 >/dev/null 2>&1 || skip "python3 not installed (the completion reads list --json with it)"
COMPLETION=$MTLSKS_SRC/completion/mtls-keystore

new_token comp
enroll srv ec:P-256 server
enroll web-cli rsa:2048 client

# The completion runs `mtls-keystore` from PATH; the config it is given loads
# the shim in front of SoftHSM, with a PIN source (so a login would succeed).
mkdir -p "$WORK/bin" "$WORK/files"
ln -s "$MTLSKS_CLI" "$WORK/bin/mtls-keystore"
SHIM_CNF=$WORK/openssl-shim.cnf
sed "s|^pkcs11-module = .*|pkcs11-module = $MTLSKS_SHIM|" "$TOKEN_CNF" >"$SHIM_CNF"
grep -q '^pkcs11-pin-source' "$SHIM_CNF" || fail "the test config has no pkcs11-pin-source"
# The default config (OPENSSL_CONF) names a module that is not there: labels
# come only from the --config on the completed line.
BROKEN_CNF=$WORK/openssl-broken.cnf
sed "s|^pkcs11-module = .*|pkcs11-module = $WORK/no-such-module.so|" "$TOKEN_CNF" >"$BROKEN_CNF"
export MTLSKS_SHIM_MODULE=$SOFTHSM_MODULE
unset MTLSKS_SHIM_FAULTS MTLSKS_SHIM_CONTROL

count_logins() { awk '$2 == "C_Login" { c = $3 } END { print c + 0 }' "$1"; }

# complete WORD...: runs _mtls_keystore with the words (the last is the one
# completed) in a fresh bash; COMPREPLY one per line in $WORK/reply.
complete_line() {
    local counts=$1
    shift
    : >"$counts"
    (cd "$WORK/files" && PATH="$WORK/bin:$PATH" OPENSSL_CONF=$BROKEN_CNF MTLSKS_SHIM_COUNTS=$counts \
        bash -c '
        complete() { :; } # no completion machinery needed for a direct call
        . "$1"; shift
        COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1))
        _mtls_keystore
        printf "%s\n" "${COMPREPLY[@]}"' bash "$COMPLETION" mtls-keystore "$@") >"$WORK/reply" 2>"$WORK/reply.err" ||
        fail "completion of '$*' failed: $(cat "$WORK/reply.err")"
}

# --label: the labels, no login.
complete_line "$WORK/label.counts" --config "$SHIM_CNF" renew --label ''
assert_grep "$WORK/reply" '^srv$' "renew --label <TAB> does not offer srv"
assert_grep "$WORK/reply" '^web-cli$' "renew --label <TAB> does not offer web-cli"
assert_grep "$WORK/label.counts" ' C_Initialize ' "the completion did not go through the shim"
assert_eq "$(count_logins "$WORK/label.counts")" 0 "C_Login calls for one renew --label <TAB>"
complete_line "$WORK/label-w.counts" --config "$SHIM_CNF" delete --label w
assert_eq "$(cat "$WORK/reply")" web-cli "delete --label w<TAB>"
assert_eq "$(count_logins "$WORK/label-w.counts")" 0 "C_Login calls for delete --label w<TAB>"
complete_line "$WORK/token.counts" --config="$SHIM_CNF" show --token ''
assert_eq "$(cat "$WORK/reply")" comp "show --token <TAB> (with --config=FILE)"
assert_eq "$(count_logins "$WORK/token.counts")" 0 "C_Login calls for show --token <TAB>"

# The same shim and config, the plain list: it logs in (so the counts above mean something).
: >"$WORK/list.counts"
run_ok list-login env MTLSKS_SHIM_COUNTS="$WORK/list.counts" "$MTLSKS_CLI" --config "$SHIM_CNF" list --json
[ "$(count_logins "$WORK/list.counts")" -ge 1 ] || fail "plain list through the shim made no C_Login: the count proves nothing"
grep -q '"class":"private-key"' "$WORK/list-login.out" || fail "plain list shows no private key"
run_ok list-public env MTLSKS_SHIM_COUNTS="$WORK/public.counts" "$MTLSKS_CLI" --config "$SHIM_CNF" list --public
assert_eq "$(count_logins "$WORK/public.counts")" 0 "C_Login calls for list --public"
assert_grep "$WORK/list-public.out" "public-key.*label 'srv'" "list --public does not show srv's public key"
if grep -q 'private-key' "$WORK/list-public.out"; then fail "list --public shows a private key"; fi

# Without --config on the line, the default config's (missing) module: nothing offered.
complete_line "$WORK/noconf.counts" renew --label ''
assert_eq "$(cat "$WORK/reply")" "" "renew --label <TAB> without --config (OPENSSL_CONF names no module)"

# Files after --key-out, with --tpm too.
touch "$WORK/files/next.tss2.pem" "$WORK/files/zz-mks-hook.sh"
chmod +x "$WORK/files/zz-mks-hook.sh"
complete_line "$WORK/x.counts" renew --tpm --key-out ne
assert_eq "$(cat "$WORK/reply")" next.tss2.pem "renew --tpm --key-out ne<TAB>"
# --hook: a path is both a command and a file; offered once.
complete_line "$WORK/x.counts" check --hook ./zz-mks-h
assert_eq "$(cat "$WORK/reply")" ./zz-mks-hook.sh "check --hook ./zz-mks-h<TAB>"
complete_line "$WORK/x.counts" check --hook zz-mks-ho
assert_eq "$(cat "$WORK/reply")" zz-mks-hook.sh "check --hook zz-mks-ho<TAB>"

# --key-type: TPM keys are at most rsa:3072.
complete_line "$WORK/x.counts" renew --tpm --key-type rsa
assert_eq "$(tr '\n' ' ' <"$WORK/reply")" "rsa:2048 rsa:3072 " "renew --tpm --key-type rsa<TAB>"
complete_line "$WORK/x.counts" enroll --tpm --key-type ''
if grep -q 'rsa:4096' "$WORK/reply"; then fail "enroll --tpm --key-type <TAB> offers rsa:4096"; fi
complete_line "$WORK/x.counts" renew --key-type rsa
assert_grep "$WORK/reply" '^rsa:4096$' "renew --key-type rsa<TAB> (a token key) does not offer rsa:4096"

note "completion: labels without a login, --config honoured, files, TPM key types"
