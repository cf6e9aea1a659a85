# shellcheck shell=bash
#
# Helpers for the installation tests (tests/integration/install_*.sh): the
# layout an installation must have under a root directory, and the demo's
# path (enroll on a SoftHSM token, CA, import, mutual TLS) run with the
# installed CLI and provider. Source after common.sh.

MODULESDIR=$(pkg-config --variable=modulesdir libcrypto 2>/dev/null || true)
ARCH_LIBDIR=lib/$(gcc -print-multiarch 2>/dev/null || dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)

# The files an installation under prefix /usr holds (relative to the root).
installed_files() {
    printf '%s\n' \
        usr/bin/mtls-keystore \
        "${MODULESDIR#/}/mtlsks.so" \
        usr/share/man/man1/mtls-keystore.1.gz \
        usr/share/man/man7/mtlsks.7.gz \
        usr/share/bash-completion/completions/mtls-keystore \
        usr/share/doc/mtls-keystore/README.md \
        usr/share/doc/mtls-keystore/docs/cli.md \
        usr/share/doc/mtls-keystore/docs/configuration.md \
        usr/share/doc/mtls-keystore/docs/layout.md \
        usr/share/doc/mtls-keystore/docs/performance.md \
        usr/share/doc/mtls-keystore/docs/renewal.md \
        usr/share/doc/mtls-keystore/docs/security.md \
        usr/share/doc/mtls-keystore/docs/servers-and-clients.md \
        usr/share/doc/mtls-keystore/docs/slow-and-remote-tokens.md \
        usr/share/doc/mtls-keystore/docs/tests.md \
        usr/share/doc/mtls-keystore/docs/tpm.md \
        usr/share/doc/mtls-keystore/examples/openssl-mtlsks.cnf \
        usr/share/doc/mtls-keystore/examples/renew-hook \
        usr/lib/systemd/system/mtls-keystore-renew.service \
        usr/lib/systemd/system/mtls-keystore-renew.timer \
        usr/include/mtlsks/keystore.h \
        "usr/$ARCH_LIBDIR/libmtlsks.a" \
        "usr/$ARCH_LIBDIR/pkgconfig/mtlsks.pc"
}

# check_layout ROOT: every file in its place, with its mode, and each one
# usable: binaries resolve their libraries and name no build directory, man
# pages render without warnings, the completion completes, the units verify,
# the example hook parses.
check_layout() {
    local root=$1 f mode
    [ -n "$MODULESDIR" ] || fail "pkg-config knows no modulesdir for libcrypto"
    while read -r f; do
        [ -f "$root/$f" ] || fail "not installed: /$f"
        mode=$(stat -c %a "$root/$f")
        case $f in
        usr/bin/* | */renew-hook) assert_eq "$mode" 755 "mode of /$f" ;;
        *.so) [ "$mode" = 644 ] || [ "$mode" = 755 ] || fail "mode of /$f: $mode" ;;
        *) assert_eq "$mode" 644 "mode of /$f" ;;
        esac
    done < <(installed_files)
    (cd "$root" && find . -type f | sed 's|^\./||' | sort) >"$WORK/installed.list"
    installed_files | sort >"$WORK/expected.list"
    comm -13 "$WORK/expected.list" "$WORK/installed.list" | sed 's/^/-- also installed: \//'

    for f in usr/bin/mtls-keystore "${MODULESDIR#/}/mtlsks.so"; do
        run_ok "ldd-$(basename "$f")" ldd "$root/$f"
        assert_no_grep "$WORK/ldd-$(basename "$f").out" 'not found' "/$f: a library is missing"
        readelf -d "$root/$f" >"$WORK/readelf-$(basename "$f").out"
        assert_no_grep "$WORK/readelf-$(basename "$f").out" 'R(UN)?PATH' "/$f carries an rpath"
    done
    for f in man1/mtls-keystore.1.gz man7/mtlsks.7.gz; do
        gzip -t "$root/usr/share/man/$f" || fail "/usr/share/man/$f is not gzip"
        if command -v groff >/dev/null 2>&1; then
            zcat "$root/usr/share/man/$f" | groff -man -Tutf8 -ww -z 2>"$WORK/groff.err" ||
                fail "groff failed on $f"
            assert_no_grep "$WORK/groff.err" '.' "$f: groff warnings"
        fi
    done
    if command -v man >/dev/null 2>&1; then
        MANWIDTH=80 man -l "$root/usr/share/man/man1/mtls-keystore.1.gz" >"$WORK/man1.txt" 2>/dev/null
        assert_grep "$WORK/man1.txt" '^RENEWAL' "mtls-keystore(1) has no RENEWAL section"
        assert_grep "$WORK/man1.txt" '^JSON OUTPUT' "mtls-keystore(1) has no JSON OUTPUT section"
    fi

    bash -c 'source "$1"
        COMP_WORDS=(mtls-keystore ren); COMP_CWORD=1; _mtls_keystore; echo "${COMPREPLY[*]}"
        COMP_WORDS=(mtls-keystore check --d); COMP_CWORD=2; _mtls_keystore; echo "${COMPREPLY[*]}"
        complete -p mtls-keystore' _ "$root/usr/share/bash-completion/completions/mtls-keystore" \
        >"$WORK/completion.out" 2>&1 || fail "the bash completion does not load"
    assert_eq "$(sed -n 1p "$WORK/completion.out")" renew "completion of 'mtls-keystore ren'"
    assert_eq "$(sed -n 2p "$WORK/completion.out")" --days "completion of 'check --d'"
    sh -n "$root/usr/share/doc/mtls-keystore/examples/renew-hook" || fail "the example hook does not parse"

    # The units, with ExecStart pointing into the root (systemd resolves the
    # bare name through its own search path on the installed system).
    if command -v systemd-analyze >/dev/null 2>&1; then
        mkdir -p "$WORK/units"
        sed "s|^ExecStart=mtls-keystore |ExecStart=$root/usr/bin/mtls-keystore |" \
            "$root/usr/lib/systemd/system/mtls-keystore-renew.service" >"$WORK/units/mtls-keystore-renew.service"
        cp "$root/usr/lib/systemd/system/mtls-keystore-renew.timer" "$WORK/units/"
        assert_grep "$WORK/units/mtls-keystore-renew.service" "^ExecStart=$root/usr/bin/mtls-keystore check --renew " \
            "the service does not run check --renew"
        run_ok systemd-verify systemd-analyze verify --man=no "$WORK/units/mtls-keystore-renew.service" \
            "$WORK/units/mtls-keystore-renew.timer"
        assert_no_grep "$WORK/systemd-verify.err" '.' "systemd-analyze verify complains"
    else
        note "systemd-analyze missing: units not verified"
    fi
    note "layout under $root: ok"
}

# check_installed_use ROOT: the installed programs do the demo's path.
check_installed_use() {
    local root=$1 cli=$1/usr/bin/mtls-keystore prov=$1$MODULESDIR/mtlsks.so
    run_ok version "$cli" --version
    assert_grep "$WORK/version.out" '^mtls-keystore [0-9]+\.[0-9]+\.[0-9]+$' "mtls-keystore --version"

    # Everything below uses the installed files, not the build's.
    MTLSKS_CLI=$cli
    MTLSKS_PROVIDER=$prov
    new_token demo

    # The provider loads from the modules directory under the root, named
    # only (as the example openssl.cnf does without a module line) ...
    grep -v '^module = ' "$TOKEN_CNF" >"$WORK/noline.cnf"
    run_ok providers-by-name env OPENSSL_CONF="$WORK/noline.cnf" OPENSSL_MODULES="$root$MODULESDIR" \
        openssl list -providers
    assert_grep "$WORK/providers-by-name.out" '^  mtlsks$' "the provider found by name is not listed"
    assert_grep "$WORK/providers-by-name.out" 'status: active' "the provider is not active"
    # ... and as `openssl -provider-path DIR -provider mtlsks` loads it.
    run_ok providers-path env OPENSSL_CONF="$MTLSKS_FIXTURE/plain.cnf" openssl list -providers \
        -provider-path "$root$MODULESDIR" -provider mtlsks -provider default
    assert_grep "$WORK/providers-path.out" '^  mtlsks$' "-provider-path: mtlsks is not listed"

    # ci/demo's path: server and client keys in the token, a CA, mutual TLS.
    run_ok demo-enroll-server mks enroll --slot 0 --label demo-server --key-type ec:P-256 \
        --subject "CN=localhost,O=mtls-keystore demo" --san DNS:localhost --san IP:127.0.0.1 \
        --usage server --out "$WORK/server.csr" --key-ref "$WORK/server.key.pem"
    run_ok demo-enroll-client mks enroll --slot 0 --label demo-client --key-type ec:P-256 \
        --subject "CN=demo client,O=mtls-keystore demo" --usage client \
        --out "$WORK/client.csr" --key-ref "$WORK/client.key.pem"
    ca_sign "$WORK/server.csr" "$WORK/server.pem"
    ca_sign "$WORK/client.csr" "$WORK/client.pem"
    run_ok demo-import-server mks import-cert --label demo-server "$WORK/server.pem"
    run_ok demo-import-client mks import-cert --label demo-client "$WORK/client.pem"
    tls_handshake demo-installed 1_3 "$WORK/server.pem" "$WORK/server.key.pem" "$WORK/client.pem" \
        "$(key_uri demo-client)"
    run_rc demo-check 1 mks check --days 30
    assert_grep "$WORK/demo-check.out" '^EXPIRING +demo-client ' "installed check"
    run_ok demo-show mks show --label demo-server --json

    # libmtlsks through pkg-config: compile, link and run a program.
    if command -v cc >/dev/null 2>&1; then
        cat >"$WORK/app.c" <<'EOF'
#include <stdio.h>
#include <mtlsks/keystore.h>

int main(int argc, char **argv)
{
    mks_config cfg = {.pkcs11_module = argv[1]};
    mks_slot_info *slots = NULL;
    mks_ctx *ctx = NULL;
    size_t n = 0, i;

    if (argc != 2 || mks_ctx_new(&cfg, &ctx) != MKS_OK || mks_slots_list(ctx, &slots, &n) != MKS_OK) {
        fprintf(stderr, "failed: %s\n", mks_last_error());
        return 1;
    }
    for (i = 0; i < n; i++)
        if (slots[i].index >= 0)
            printf("token %s\n", slots[i].token_label);
    mks_slots_free(slots, n);
    mks_ctx_free(ctx);
    return 0;
}
EOF
        local pc=$root/usr/$ARCH_LIBDIR/pkgconfig
        run_ok pkg-config env PKG_CONFIG_PATH="$pc" pkg-config --cflags --libs mtlsks
        assert_grep "$WORK/pkg-config.out" "-I$root/usr/lib/[^ ]*/include|-I$root/usr/include" \
            "pkg-config --cflags: not the root's include directory"
        # shellcheck disable=SC2046
        run_ok cc-app cc -o "$WORK/app" "$WORK/app.c" $(PKG_CONFIG_PATH=$pc pkg-config --cflags --libs mtlsks)
        run_ok run-app "$WORK/app" "$SOFTHSM_MODULE"
        assert_grep "$WORK/run-app.out" '^token demo$' "a program linked with libmtlsks: output"
    fi
    note "installed programs under $root: ok"
}
