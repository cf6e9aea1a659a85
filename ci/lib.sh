# shellcheck shell=bash
# Shared by ci/test and ci/demo: the Debian packages the project needs, and
# the build. Build: compiler, CMake, Ninja, OpenSSL, p11-kit and tpm2-tss
# headers, cmocka. Tests: SoftHSM, pkcs11-tool (opensc), GnuTLS tools, libp11's
# engine, swtpm, tpm2-tools (lockout reset, transient handle checks),
# tpm2-openssl (the TPM interop peer), curl, Python, nginx, HAProxy; clang-format
# for the format check. ACME: libcurl, json-c and libmicrohttpd headers (the client and
# its http-01 responder), pebble and pebble-challtestsrv (the test CA and its
# DNS server), lego (the ACME client the bench compares with).

CI_PACKAGES=(
    build-essential cmake ninja-build pkg-config
    libssl-dev openssl
    libp11-kit-dev p11-kit p11-kit-modules
    libtss2-dev
    libcmocka-dev
    libcurl4-openssl-dev libjson-c-dev libmicrohttpd-dev
    softhsm2 opensc gnutls-bin libengine-pkcs11-openssl
    swtpm tpm2-tools tpm2-openssl
    # a TPM resource manager for the tpm.tabrmd.* tests: tpm2-abrmd on a
    # private D-Bus session bus (libtss2-dev brings the pcap TCTI)
    tpm2-abrmd libtss2-tcti-tabrmd0 dbus-daemon dbus-session-bus-common
    curl python3 clang-format
    # a real forking server with a token key (tests/integration/nginx.sh)
    nginx
    # the ACME test CA (tests/lib/acme.sh) and the ACME client bench/ compares with
    pebble lego
    # an event-loop server with ssl-mode-async (tests/integration/haproxy.sh)
    haproxy
    # installation and packaging tests (install_*.sh): dpkg-shlibdeps, man
    # page rendering, systemd-analyze verify of the units
    dpkg-dev groff-base man-db systemd
    # hardening: the ASan+UBSan build and libFuzzer targets (clang, with
    # llvm-symbolizer for readable reports), the memcheck stage (valgrind)
    clang llvm valgrind
)

ci_step() { printf '\n== %s\n' "$*"; }
ci_die() {
    printf '%s: %s\n' "${0##*/}" "$*" >&2
    exit 1
}

# Installs the packages that are missing (apt-get, as root or through sudo).
# Nothing is fetched when everything is installed already.
ci_install_packages() {
    local missing=() p
    for p in "${CI_PACKAGES[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$p")
        fi
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        echo "all ${#CI_PACKAGES[@]} packages installed"
        return 0
    fi
    echo "installing: ${missing[*]}"
    command -v apt-get >/dev/null 2>&1 || ci_die "apt-get not found; install by hand: ${missing[*]}"
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || ci_die "not root and no sudo; install by hand: ${missing[*]}"
        sudo=(sudo)
    fi
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${missing[@]}"
}

# ci_build DIR [cmake options...]: configures with Ninja and builds.
ci_build() {
    local dir=$1
    shift
    # A build directory made with another generator cannot be reused with Ninja.
    if [ -f "$dir/CMakeCache.txt" ] && ! grep -q '^CMAKE_GENERATOR:INTERNAL=Ninja$' "$dir/CMakeCache.txt"; then
        echo "$dir was configured with another generator; reconfiguring it for Ninja"
        rm -rf "$dir/CMakeCache.txt" "$dir/CMakeFiles"
    fi
    cmake -S . -B "$dir" -G Ninja "$@" && cmake --build "$dir"
}
