#!/usr/bin/env bash
# The Debian packages built from the tree with CPack (packaging/cpack.cmake):
# mtls-keystore and libmtlsks-dev, their control fields (dependencies cover
# what dpkg-shlibdeps derives from the binaries), maintainer scripts and
# contents; apt resolves their installation on this Debian system (simulated);
# unpacked into a scratch root (dpkg -x) they hold the same layout as
# `cmake --install`, and the demo's path runs with the unpacked CLI and
# provider.
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/install.sh"

setup_test
require_cmd cpack dpkg-deb pkg-config readelf
[ -r "$MTLSKS_BUILD/CPackConfig.cmake" ] || fail "no CPackConfig.cmake in $MTLSKS_BUILD"

run_ok cpack cpack -G DEB --config "$MTLSKS_BUILD/CPackConfig.cmake" -B "$WORK/pkg"
version=$("$MTLSKS_CLI" --version | sed 's/^mtls-keystore //')
arch=$(dpkg --print-architecture)
DEB=$WORK/pkg/mtls-keystore_${version}-1_$arch.deb
DEV=$WORK/pkg/libmtlsks-dev_${version}-1_$arch.deb
assert_file "$DEB" "the mtls-keystore package"
assert_file "$DEV" "the libmtlsks-dev package"

field() { dpkg-deb -f "$1" "$2"; }
assert_eq "$(field "$DEB" Package)/$(field "$DEB" Version)/$(field "$DEB" Architecture)" \
    "mtls-keystore/$version-1/$arch" "mtls-keystore: Package/Version/Architecture"
assert_eq "$(field "$DEV" Package)/$(field "$DEV" Version)" "libmtlsks-dev/$version-1" \
    "libmtlsks-dev: Package/Version"
depends=$(field "$DEB" Depends)
for p in libc6 libssl3 libp11-kit0 libtss2-esys-3.0.2-0 libtss2-tctildr0 libtss2-mu0 libtss2-rc0 p11-kit-modules; do
    case ", $depends," in
    *", $p "* | *", $p,"*) ;;
    *) fail "mtls-keystore does not depend on $p: $depends" ;;
    esac
done
field "$DEB" Description >"$WORK/description"
assert_grep "$WORK/description" '^private keys for mutual TLS' "Description synopsis"
for s in postinst prerm postrm; do
    dpkg-deb --ctrl-tarfile "$DEB" | tar -xO "./$s" >"$WORK/$s" || fail "no $s in the package"
    sh -n "$WORK/$s" || fail "$s does not parse"
done

# Whatever the binaries link, the package depends on (dpkg-shlibdeps, dpkg-dev).
ROOT=$WORK/root
mkdir -p "$ROOT"
run_ok unpack dpkg -x "$DEB" "$ROOT"
run_ok unpack-dev dpkg -x "$DEV" "$ROOT"
if command -v dpkg-shlibdeps >/dev/null 2>&1; then
    mkdir -p "$WORK/shlibs/debian"
    : >"$WORK/shlibs/debian/control"
    (cd "$WORK/shlibs" && dpkg-shlibdeps -O "$ROOT/usr/bin/mtls-keystore" "$ROOT$MODULESDIR/mtlsks.so") \
        >"$WORK/shlibdeps.out" 2>/dev/null || fail "dpkg-shlibdeps failed"
    sed -n 's/^shlibs:Depends=//p' "$WORK/shlibdeps.out" | tr ',' '\n' | sed 's/^ *//; s/ .*//' |
        while read -r p; do
            [ -n "$p" ] || continue
            case ", $depends," in
            *", $p "* | *", $p,"*) ;;
            *) fail "the binaries need $p, which Depends lacks: $depends" ;;
            esac
        done
fi

dpkg-deb -c "$DEB" >"$WORK/contents"
dpkg-deb -c "$DEV" >>"$WORK/contents"
assert_no_grep "$WORK/contents" ' \./usr/local/|/tmp/|/build' "package contents outside /usr"
awk '$2 != "root/root" { print; bad = 1 } END { exit bad }' "$WORK/contents" ||
    fail "files not owned by root/root in the packages"

# apt would install both on this system (simulated; needs apt's package lists).
candidate=$(apt-cache policy libssl3 2>/dev/null || true)
if command -v apt-get >/dev/null 2>&1 && [[ $candidate == *"Candidate: "[0-9]* ]]; then
    run_ok apt-simulate apt-get -s -q install "$DEB" "$DEV"
    assert_grep "$WORK/apt-simulate.out" '^Inst mtls-keystore ' "apt does not install mtls-keystore"
    assert_grep "$WORK/apt-simulate.out" '^Inst libmtlsks-dev ' "apt does not install libmtlsks-dev"
else
    note "apt has no package lists: installation not simulated"
fi

check_layout "$ROOT"
check_installed_use "$ROOT"
note "Debian packages: ok"
