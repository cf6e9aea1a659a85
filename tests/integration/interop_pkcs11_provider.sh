#!/usr/bin/env bash
# Key-reference files that pkcs11-provider 1.2 wrote (EC P-256 and RSA 2048,
# with the SoftHSM token holding their keys, in shared/interop/) load through
# our provider: `openssl pkey -pubout` exports the public key and
# `openssl dgst -sign FILE` makes a signature that verifies with it in the
# default provider. And the keys open by URI too.
. "$(dirname "$0")/../lib/common.sh"

setup_test
INTEROP=${MTLSKS_INTEROP_DIR:-$MTLSKS_SRC/../shared/interop/pkcs11-provider-1.2}
[ -d "$INTEROP/tokens" ] || skip "pkcs11-provider 1.2 test data not found at $INTEROP"

# SoftHSM writes lock files: work on a copy.
cp -R "$INTEROP/tokens" "$WORK/tokens"
chmod -R u+w "$WORK/tokens"
use_tokendir "$WORK/tokens"
TOKEN_LABEL=interop

head -c 4096 /dev/urandom >"$WORK/data"
for f in ec-genpkey rsa-genpkey; do
    cp "$INTEROP/$f.pem" "$WORK/$f.pem"
    run_ok "pubout-$f" ossl pkey -in "$WORK/$f.pem" -pubout -out "$WORK/$f.pub.pem"
    run_ok "pubtext-$f" plain_ossl pkey -pubin -in "$WORK/$f.pub.pem" -noout -text
    case $f in
    ec-*) assert_grep "$WORK/pubtext-$f.out" 'NIST CURVE: P-256' "$f: not a P-256 public key" ;;
    rsa-*) assert_grep "$WORK/pubtext-$f.out" 'Public-Key: \(2048 bit\)' "$f: not an RSA 2048 public key" ;;
    esac
    run_ok "sign-$f" ossl dgst -sha256 -sign "$WORK/$f.pem" -out "$WORK/$f.sig" "$WORK/data"
    assert_file "$WORK/$f.sig" "$f: signature"
    run_ok "verify-$f" plain_ossl dgst -sha256 -verify "$WORK/$f.pub.pem" -signature "$WORK/$f.sig" "$WORK/data"
    assert_grep "$WORK/verify-$f.out" '^Verified OK$' "$f: the signature made through the key reference does not verify"
    note "$f: loads, exports its public key, signs"
done

# The same keys by URI give the same public keys.
run_ok pubout-uri-ec ossl pkey -in "pkcs11:token=interop;object=web;type=private" -pubout \
    -out "$WORK/ec-uri.pub.pem"
assert_same_file "$WORK/ec-genpkey.pub.pem" "$WORK/ec-uri.pub.pem" "EC key by URI vs by key reference"
run_ok pubout-uri-rsa ossl pkey -in "pkcs11:token=interop;object=client%20one;type=private" -pubout \
    -out "$WORK/rsa-uri.pub.pem"
assert_same_file "$WORK/rsa-genpkey.pub.pem" "$WORK/rsa-uri.pub.pem" "RSA key by URI vs by key reference"
