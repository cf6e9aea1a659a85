# Debian packages with CPack, from any build directory:
#
#   cpack -G DEB --config BUILD/CPackConfig.cmake -B OUTDIR
#   (or packaging/build-deb, which also configures a build for /usr)
#
# makes two packages:
#   mtls-keystore_VERSION-1_ARCH.deb   the provider, the CLI, man pages,
#                                      bash completion, systemd units, examples
#   libmtlsks-dev_VERSION-1_ARCH.deb   header, static library, pkg-config file
# Both install under /usr (the provider into OpenSSL's modules directory).
# Dependencies are the Debian 12 packages of the libraries the binaries link
# (tests/integration/install_deb.sh checks them against dpkg-shlibdeps) and
# p11-kit-modules, which holds p11-kit-proxy.so, the default PKCS#11 module.

set(CPACK_PACKAGE_NAME "mtls-keystore")
set(CPACK_PACKAGE_VENDOR "mtls-keystore")
set(CPACK_PACKAGE_VERSION "${PROJECT_VERSION}")
# No CPACK_PACKAGE_DESCRIPTION_SUMMARY: CPack would put it before each
# package's own description (CPACK_DEBIAN_<COMPONENT>_DESCRIPTION, whose
# first line is the synopsis).
set(MTLSKS_PACKAGE_CONTACT "mtls-keystore maintainers <mtls-keystore@localhost>" CACHE STRING
  "Maintainer field of the Debian packages")
set(CPACK_PACKAGE_CONTACT "${MTLSKS_PACKAGE_CONTACT}")
set(CPACK_PACKAGING_INSTALL_PREFIX "/usr")
set(CPACK_GENERATOR "DEB")
set(CPACK_STRIP_FILES TRUE)
set(CPACK_SOURCE_GENERATOR "")

set(CPACK_DEB_COMPONENT_INSTALL ON)
# Files installed without a component (the programs in provider/ and cli/,
# and packaging/install.cmake's runtime files) are "Unspecified".
set(CPACK_COMPONENTS_ALL Unspecified dev)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_RELEASE 1)
set(CPACK_DEBIAN_PACKAGE_SECTION "utils")
set(CPACK_DEBIAN_PACKAGE_PRIORITY "optional")

set(CPACK_DEBIAN_UNSPECIFIED_PACKAGE_NAME "mtls-keystore")
set(CPACK_DEBIAN_UNSPECIFIED_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_UNSPECIFIED_PACKAGE_SECTION "utils")
set(CPACK_DEBIAN_UNSPECIFIED_PACKAGE_DEPENDS
  "libc6 (>= 2.34), libssl3 (>= 3.0.7), libp11-kit0 (>= 0.24), libtss2-esys-3.0.2-0 (>= 3.2), libtss2-tctildr0 (>= 3.2), libtss2-mu0 (>= 3.2), libtss2-rc0 (>= 3.2), libcurl4 (>= 7.85), libjson-c5 (>= 0.15), libmicrohttpd12 (>= 0.9.71), p11-kit-modules")
set(CPACK_DEBIAN_UNSPECIFIED_PACKAGE_SUGGESTS "softhsm2, opensc, tpm2-tools")
set(CPACK_DEBIAN_UNSPECIFIED_DESCRIPTION
  "private keys for mutual TLS in PKCS#11 tokens, for every OpenSSL 3 program
mtls-keystore keeps the private keys of TLS clients and servers in a PKCS#11
token (HSM, smart card, USB key) where they never leave it.

This package holds mtlsks.so, an OpenSSL 3 provider that signs with token
keys wherever a program loads a key file (through small key-reference
files) or a pkcs11: URI; and mtls-keystore, the command that creates keys
in the token, makes CSRs, stores certificates, checks their expiry and
renews them, and enrolls and renews unattended from ACME CAs (RFC 8555)
with the ACME account key in hardware too. A systemd timer
(mtls-keystore-renew.timer) renews ACME-enrolled certificates before they
expire.")
set(CPACK_DEBIAN_UNSPECIFIED_PACKAGE_CONTROL_EXTRA
  "${PROJECT_SOURCE_DIR}/packaging/debian/postinst;${PROJECT_SOURCE_DIR}/packaging/debian/prerm;${PROJECT_SOURCE_DIR}/packaging/debian/postrm")
set(CPACK_DEBIAN_UNSPECIFIED_PACKAGE_CONTROL_STRICT_PERMISSION ON)

set(CPACK_DEBIAN_DEV_PACKAGE_NAME "libmtlsks-dev")
set(CPACK_DEBIAN_DEV_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_DEV_PACKAGE_SECTION "libdevel")
set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS
  "libssl-dev (>= 3.0.7), libp11-kit-dev (>= 0.24), libtss2-dev (>= 3.2)")
set(CPACK_DEBIAN_DEV_DESCRIPTION
  "mtls-keystore keystore library (static) and header
libmtlsks is the library mtls-keystore and its OpenSSL provider are built
on: PKCS#11 modules through p11-kit, RFC 7512 URIs, a session pool, login,
key generation, signing, certificates and key references, and a TPM 2.0
backend. This package holds its header, the static library and mtlsks.pc
for pkg-config.")

include(CPack)
