#!/usr/bin/env bash
# tpm_enroll.sh: `enroll --tpm`, `csr --key` and `list --tpm` on an swtpm.
# - Every key type (EC P-256/P-384, RSA 2048/3072): the CSR verifies and
#   carries the TPM key's public key, as our provider and tpm2-openssl read it
#   from the key file; EC with the named curve; the key file is a TSS2 PRIVATE
#   KEY PEM, mode 0600; the SANs are there.
# - --persist: the key is also at a persistent handle; list --tpm (text and
#   JSON) shows it with its tpmkey: URI; csr --key takes that URI and the file.
# - The TCTI comes from the config's tpm2-tcti; --tcti overrides it (errors
#   name the one used, and a TCTI name no library answers to); an
#   unreachable TPM fails with exit 1 and a message that names the TCTI and
#   how to set it.
# - Bad input is a usage error (exit 2) and leaves nothing behind; an
#   existing file or a taken handle is refused (exit 1).
# - Nothing stays loaded in the TPM (bare swtpm, no resource manager).
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/tpm.sh"

setup_tpm_test_on_swtpm
have_tpm2_openssl=1
[ -r "$TPM2_PROVIDER_DIR/tpm2.so" ] || {
    have_tpm2_openssl=0
    note "tpm2-openssl missing: public keys are compared through our provider only"
}

for type in ec:P-256 ec:P-384 rsa:2048 rsa:3072; do
    name=k-${type/:/-}
    tpm_enroll "$name" "$type" both
    assert_grep "$WORK/enroll-$name.out" "^key: +TPM key in .*$name.key.pem, $type, label '$name'" \
        "$name: enroll did not print the key"
    assert_grep "$WORK/enroll-$name.out" "^tcti: +$SWTPM_TCTI\$" "$name: enroll did not print the TCTI"
    assert_grep "$WORK/enroll-$name.out" '^auth: +none' "$name: a key without a password"
    assert_eq "$(file_mode "$WORK/$name.key.pem")" 600 "$name: key file mode"
    assert_eq "$(head -n1 "$WORK/$name.key.pem")" "-----BEGIN TSS2 PRIVATE KEY-----" "$name: key file"
    run_ok "verify-$name" plain_ossl req -in "$WORK/$name.csr" -verify -noout -text
    assert_grep "$WORK/verify-$name.err" 'verify OK' "$name: CSR signature"
    assert_grep "$WORK/verify-$name.out" 'DNS:k-.*\.test, DNS:localhost, IP Address:127\.0\.0\.1' \
        "$name: SANs"
    case $type in
    ec:P-256) assert_grep "$WORK/verify-$name.out" 'ASN1 OID: prime256v1' "$name: named curve" ;;
    ec:P-384) assert_grep "$WORK/verify-$name.out" 'ASN1 OID: secp384r1' "$name: named curve" ;;
    rsa:*) assert_grep "$WORK/verify-$name.out" "Public-Key: \(${type#rsa:} bit\)" "$name: RSA size" ;;
    esac
    spki_of_csr "$WORK/$name.csr" "$WORK/$name.csr.pub"
    pubkey_via "pub-ours-$name" "$WORK/$name.key.pem" "$WORK/$name.ours.pub"
    assert_same_file "$WORK/$name.csr.pub" "$WORK/$name.ours.pub" "$name: CSR key vs key file (ours)"
    if [ "$have_tpm2_openssl" = 1 ]; then
        run_ok "pub-tpm2-$name" tpm2_ossl pkey -provider tpm2 -provider default \
            -in "$WORK/$name.key.pem" -pubout -out "$WORK/$name.tpm2.pub"
        assert_same_file "$WORK/$name.csr.pub" "$WORK/$name.tpm2.pub" \
            "$name: CSR key vs key file (tpm2-openssl)"
    fi
done

# A new CSR for the same key, from its file.
run_ok csr-file mks csr --key "$WORK/k-ec-P-256.key.pem" --subject "CN=renewed" --usage client \
    --out "$WORK/renew.csr"
assert_grep "$WORK/csr-file.out" "^key: +TPM key .*k-ec-P-256.key.pem" "csr --key FILE"
spki_of_csr "$WORK/renew.csr" "$WORK/renew.pub"
assert_same_file "$WORK/renew.pub" "$WORK/k-ec-P-256.csr.pub" "csr --key FILE: same key"

# The key file is already all a program needs; writing the private key out is
# refused with the reason, from the file and from the persistent handle.
run_fails export-file ossl pkey -in "$WORK/k-ec-P-256.key.pem" -out "$WORK/exported.pem"
[ ! -s "$WORK/exported.pem" ] || fail "export-file: a private key was written out"
assert_grep "$WORK/export-file.err" 'the private key stays in the TPM and cannot be written out' \
    "export-file: the refusal does not say why"

# Persistent keys.
tpm_enroll pers ec:P-256 server --persist 0x81000042
assert_grep "$WORK/enroll-pers.out" '^key: +tpmkey:handle=0x81000042 \(persistent' "persistent key URI"
tpm_enroll pers-rsa rsa:2048 server --persist 0x81000043
run_ok list mks list --tpm
assert_grep "$WORK/list.out" "^TPM: $SWTPM_TCTI\$" "list --tpm: TCTI"
run_fails export-handle ossl pkey -in tpmkey:handle=0x81000042 -out "$WORK/exported-handle.pem"
assert_grep "$WORK/export-handle.err" \
    'the private key tpmkey:handle=0x81000042 stays in the TPM and cannot be written out' \
    "export-handle: the refusal does not say why"
assert_grep "$WORK/list.out" '0x81000042 +ec P-256 +tpmkey:handle=0x81000042$' "list --tpm: EC key"
assert_grep "$WORK/list.out" '0x81000043 +rsa 2048 +tpmkey:handle=0x81000043$' "list --tpm: RSA key"
run_ok list-json mks list --tpm --json
run_ok list-json-parse python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert d["tcti"] == sys.argv[2], d
keys = {k["handle"]: k for k in d["persistent_keys"]}
assert keys["0x81000042"] == {"handle": "0x81000042", "uri": "tpmkey:handle=0x81000042",
    "key_type": "ec", "curve": "P-256", "bits": 256}, keys
assert keys["0x81000043"]["key_type"] == "rsa" and keys["0x81000043"]["bits"] == 2048, keys
' "$WORK/list-json.out" "$SWTPM_TCTI"
run_ok csr-handle mks csr --key tpmkey:handle=0x81000042 --subject "CN=by-handle" --out "$WORK/h.csr"
spki_of_csr "$WORK/h.csr" "$WORK/h.pub"
spki_of_csr "$WORK/pers.csr" "$WORK/pers.pub"
assert_same_file "$WORK/h.pub" "$WORK/pers.pub" "csr --key tpmkey: same key"
# The file of a persistent key loads too (a second, transient copy).
run_ok csr-pers-file mks csr --key "$WORK/pers.key.pem" --subject "CN=by-file" --out "$WORK/hf.csr"
# A taken handle is refused, and nothing is written.
run_rc persist-taken 1 mks enroll --tpm --persist 0x81000042 --subject CN=x \
    --out "$WORK/taken.csr" --key-ref "$WORK/taken.key.pem"
assert_grep "$WORK/persist-taken.err" '0x81000042 holds a key already' "taken handle message"
assert_no_file "$WORK/taken.key.pem" "taken handle: key file"
assert_no_file "$WORK/taken.csr" "taken handle: CSR"
run_rc csr-no-handle 1 mks csr --key tpmkey:handle=0x81000999 --subject CN=x --out "$WORK/n.csr"
assert_grep "$WORK/csr-no-handle.err" 'no key at TPM handle 0x81000999' "unknown handle"

# delete --tpm --handle: asks (refused without a terminal or --yes), evicts,
# and then the handle is free; usage errors touch nothing.
run_rc delete-no-yes 2 mks delete --tpm --handle 0x81000043
assert_grep "$WORK/delete-no-yes.err" 'add --yes' "delete without --yes and without a terminal"
run_rc delete-no-handle 2 mks delete --tpm --yes
run_rc delete-bad-handle 2 mks delete --tpm --handle 0x1234 --yes
run_rc delete-label 2 mks delete --tpm --label pers --handle 0x81000043 --yes
tpm2_getcap handles-persistent -T "$SWTPM_TCTI" >"$WORK/persistent-before.out"
assert_grep "$WORK/persistent-before.out" '0x81000043' "refused deletes left the key"
run_ok delete-handle mks delete --tpm --handle 0x81000043 --yes
assert_grep "$WORK/delete-handle.out" '^deleted: tpmkey:handle=0x81000043' "delete --tpm output"
assert_grep "$WORK/delete-handle.err" 'tpmkey:handle=0x81000043 +rsa 2048' "delete --tpm lists the key"
tpm2_getcap handles-persistent -T "$SWTPM_TCTI" >"$WORK/persistent-after.out"
assert_no_grep "$WORK/persistent-after.out" '0x81000043' "the key is evicted"
assert_grep "$WORK/persistent-after.out" '0x81000042' "the other persistent key stays"
run_rc delete-again 1 mks delete --tpm --handle 0x81000043 --yes
assert_grep "$WORK/delete-again.err" 'no persistent key at 0x81000043' "deleting a free handle"

# TCTI: --tcti overrides the config; an unreachable TPM is named.
dead=$(free_port_pair)
tpm_cnf "$WORK/dead.cnf" "swtpm:host=127.0.0.1,port=$dead"
run_ok tcti-override "$MTLSKS_CLI" --config "$WORK/dead.cnf" --tcti "$SWTPM_TCTI" list --tpm
assert_grep "$WORK/tcti-override.out" '0x81000042' "--tcti over the config's tpm2-tcti"
run_rc tcti-dead-config 1 "$MTLSKS_CLI" --config "$WORK/dead.cnf" list --tpm
assert_grep "$WORK/tcti-dead-config.err" "port=$dead.*tpm2-tcti in section \[mtlsks_sect\] of .*dead.cnf" \
    "unreachable TPM (config): names the TCTI and where it is set"
run_rc tcti-dead-flag 1 mks --tcti "swtpm:host=127.0.0.1,port=$dead" enroll --tpm --subject CN=x \
    --out "$WORK/dead.csr" --key-ref "$WORK/dead.key.pem"
assert_grep "$WORK/tcti-dead-flag.err" "no TPM answers on the TCTI swtpm:host=127.0.0.1,port=$dead given with --tcti" \
    "unreachable TPM (--tcti)"
assert_no_grep "$WORK/tcti-dead-flag.err" 'openssl\.cnf' "unreachable TPM (--tcti): points to openssl.cnf as well"
assert_no_file "$WORK/dead.key.pem" "unreachable TPM: key file"
# A TCTI name no library answers to: said so, not "Functionality not supported".
run_rc tcti-bogus 1 mks --tcti bogus:xyz enroll --tpm --subject CN=x \
    --out "$WORK/dead.csr" --key-ref "$WORK/dead.key.pem"
assert_grep "$WORK/tcti-bogus.err" "there is no TCTI named 'bogus' in TCTI 'bogus:xyz' \\(libtss2-tcti-bogus\\.so\\.0 cannot be loaded\\)" \
    "unknown TCTI: not named"
assert_grep "$WORK/tcti-bogus.err" 'given with --tcti' "unknown TCTI: its source is not named"
assert_no_grep "$WORK/tcti-bogus.err" 'Functionality not supported|openssl\.cnf' "unknown TCTI: tctildr's reason or a wrong source"
assert_no_file "$WORK/dead.key.pem" "unknown TCTI: key file"
run_rc tcti-dead-csr 1 mks --tcti "swtpm:host=127.0.0.1,port=$dead" csr \
    --key "$WORK/k-ec-P-256.key.pem" --subject CN=x --out "$WORK/dead.csr"
assert_grep "$WORK/tcti-dead-csr.err" "cannot reach the TPM through TCTI 'swtpm:host=127.0.0.1,port=$dead'" \
    "unreachable TPM (csr)"
assert_no_file "$WORK/dead.csr" "unreachable TPM: CSR"

# tpm2-hold-objects and tpm2-sessions take only their values: the CLI and
# the provider say which, and where the bad one is set.
for setting in "tpm2-hold-objects = maybe" "tpm2-sessions = never"; do
    name=${setting%% *}
    tpm_cnf "$WORK/bad-$name.cnf" "$SWTPM_TCTI"
    sed -i "s|^tpm2-tcti = .*|&\n$setting|" "$WORK/bad-$name.cnf"
    run_rc "bad-$name-cli" 1 "$MTLSKS_CLI" --config "$WORK/bad-$name.cnf" list --tpm
    assert_grep "$WORK/bad-$name-cli.err" "section \[mtlsks_sect\] of .*bad-$name.cnf: $name = '[a-z]*' is not a choice: auto" \
        "$setting: the CLI's message"
    run_fails "bad-$name-provider" env OPENSSL_CONF="$WORK/bad-$name.cnf" openssl pkey \
        -in "$WORK/k-ec-P-256.key.pem" -pubout
    assert_grep "$WORK/bad-$name-provider.err" "$name = '[a-z]*' is not a choice" "$setting: the provider's message"
done

# Usage errors: exit 2, nothing written.
run_rc usage-slot 2 mks enroll --tpm --slot 0 --subject CN=x --out "$WORK/u.csr" --key-ref "$WORK/u.pem"
run_rc usage-rsa4096 2 mks enroll --tpm --key-type rsa:4096 --subject CN=x --out "$WORK/u.csr" \
    --key-ref "$WORK/u.pem"
assert_grep "$WORK/usage-rsa4096.err" 'TPM keys are ec:P-256, ec:P-384, rsa:2048 or rsa:3072' "rsa:4096"
run_rc usage-persist 2 mks enroll --tpm --persist 0x1234 --subject CN=x --out "$WORK/u.csr" \
    --key-ref "$WORK/u.pem"
run_rc usage-password 2 mks enroll --tpm --password-source s3cret --subject CN=x \
    --out "$WORK/u.csr" --key-ref "$WORK/u.pem"
assert_grep "$WORK/usage-password.err" 'no option takes the password itself' "password source"
assert_no_grep "$WORK/usage-password.err" 's3cret' "the password-like argument is not echoed"
run_rc usage-persist-token 2 mks enroll --slot 0 --label x --persist 0x81000001 --subject CN=x \
    --out "$WORK/u.csr" --key-ref "$WORK/u.pem"
run_rc usage-tcti 2 mks --tcti '' list --tpm
run_rc usage-handle 1 mks csr --key tpmkey:handle=0x1 --subject CN=x --out "$WORK/u.csr"
assert_no_file "$WORK/u.csr" "usage errors: CSR"
assert_no_file "$WORK/u.pem" "usage errors: key file"
# An existing key file is refused without --force, kept as it was.
cp "$WORK/k-ec-P-256.key.pem" "$WORK/keep.pem"
run_rc exists 1 mks enroll --tpm --subject CN=x --out "$WORK/e.csr" --key-ref "$WORK/keep.pem"
assert_grep "$WORK/exists.err" 'exists; refusing to overwrite it' "existing key file"
assert_same_file "$WORK/keep.pem" "$WORK/k-ec-P-256.key.pem" "existing key file untouched"
run_ok exists-force mks enroll --tpm --subject CN=x --out "$WORK/e.csr" --key-ref "$WORK/keep.pem" --force
# Software keys are refused by csr --key.
run_ok soft-key plain_ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$WORK/soft.pem"
run_rc csr-soft 1 mks csr --key "$WORK/soft.pem" --subject CN=x --out "$WORK/s.csr"
assert_grep "$WORK/csr-soft.err" 'software private key' "software key refused"

tpm_assert_no_transient "$SWTPM_TCTI" "after enroll, csr and list"
note "enroll --tpm, csr --key, list --tpm: ok"
