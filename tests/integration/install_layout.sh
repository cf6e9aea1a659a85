#!/usr/bin/env bash
# `cmake --install` into a scratch root (DESTDIR): every file where a Debian
# system looks for it (the provider in OpenSSL's modules directory, the CLI,
# man pages, bash completion, example openssl.cnf and hook, systemd units,
# libmtlsks with header and pkg-config file), each usable; then the demo's
# path with the installed CLI and provider: enroll on a SoftHSM token, a CA
# signs, import-cert, mutual TLS; and a program built against the installed
# libmtlsks through pkg-config. A /usr/local install keeps the provider in
# OpenSSL's directory and finds its pkg-config prefix.
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/install.sh"

setup_test
require_cmd cmake pkg-config readelf

ROOT=$WORK/root
run_ok install env DESTDIR="$ROOT" cmake --install "$MTLSKS_BUILD" --prefix /usr
check_layout "$ROOT"
check_installed_use "$ROOT"

# Another prefix: everything under it but the provider, which goes where
# OpenSSL looks; mtlsks.pc names the prefix it was installed to.
LOCAL=$WORK/local
run_ok install-local env DESTDIR="$LOCAL" cmake --install "$MTLSKS_BUILD" --prefix /usr/local
assert_file "$LOCAL/usr/local/bin/mtls-keystore" "/usr/local install: the CLI"
assert_file "$LOCAL$MODULESDIR/mtlsks.so" "/usr/local install: the provider in OpenSSL's modules directory"
assert_file "$LOCAL/usr/local/lib/systemd/system/mtls-keystore-renew.timer" "/usr/local install: the timer"
run_ok pc-local env PKG_CONFIG_PATH="$LOCAL/usr/local/$ARCH_LIBDIR/pkgconfig" pkg-config --cflags mtlsks
flag=$(sed 's/^-I//; s/ .*//' "$WORK/pc-local.out")
assert_eq "$(cd "$flag" && pwd -P)" "$(cd "$LOCAL/usr/local/include" && pwd -P)" "/usr/local install: pkg-config's include directory"
note "cmake --install: ok"
