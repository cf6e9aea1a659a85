# What `cmake --install` puts where, beyond the two programs (provider/ and
# cli/ install mtlsks.so into OpenSSL's modules directory and mtls-keystore
# into bin):
#
#   share/man/man1/mtls-keystore.1.gz, share/man/man7/mtlsks.7.gz
#   share/bash-completion/completions/mtls-keystore
#   share/doc/mtls-keystore/{README.md, docs/*.md, examples/openssl-mtlsks.cnf, examples/renew-hook}
#   lib/systemd/system/mtls-keystore-renew.{service,timer}     (MTLSKS_SYSTEMD_UNITDIR)
#   include/mtlsks/keystore.h, LIBDIR/libmtlsks.a, LIBDIR/pkgconfig/mtlsks.pc
#                                                    (component "dev")
#
# Paths are relative to the install prefix, so that `cmake --install
# --prefix /usr` and CPack (packaging/cpack.cmake) put them right whatever
# prefix the build was configured with. The one absolute path is OpenSSL's
# modules directory, which is where OpenSSL looks for mtlsks.so. No
# installed file names the prefix: the units run `mtls-keystore` through
# systemd's search path and mtlsks.pc finds its prefix from its own place.

# Debian's multiarch library directory for libmtlsks.a and mtlsks.pc
# (GNUInstallDirs uses it only when the prefix is /usr; pkg-config searches
# /usr/local/lib/<arch>/pkgconfig too).
if(CMAKE_INSTALL_LIBDIR STREQUAL "lib" AND CMAKE_LIBRARY_ARCHITECTURE)
  set(MTLSKS_INSTALL_LIBDIR_DEFAULT "lib/${CMAKE_LIBRARY_ARCHITECTURE}")
else()
  set(MTLSKS_INSTALL_LIBDIR_DEFAULT "${CMAKE_INSTALL_LIBDIR}")
endif()
set(MTLSKS_INSTALL_LIBDIR "${MTLSKS_INSTALL_LIBDIR_DEFAULT}" CACHE STRING
  "where libmtlsks.a and pkgconfig/mtlsks.pc go, relative to the prefix")
set(MTLSKS_SYSTEMD_UNITDIR "lib/systemd/system" CACHE STRING
  "where the systemd units go, relative to the prefix (or absolute)")
set(MTLSKS_DOCDIR "${CMAKE_INSTALL_DATAROOTDIR}/doc/mtls-keystore")

# Man pages, compressed as Debian ships them (gzip -n: reproducible).
find_program(GZIP_PROGRAM gzip)
set(MTLSKS_MAN_PAGES man/mtls-keystore.1 man/mtlsks.7)
foreach(page ${MTLSKS_MAN_PAGES})
  get_filename_component(name ${page} NAME)
  string(REGEX REPLACE "^.*\\.([0-9])$" "\\1" section ${name})
  set(src ${PROJECT_SOURCE_DIR}/${page})
  if(GZIP_PROGRAM)
    set(out ${PROJECT_BINARY_DIR}/man/${name}.gz)
    add_custom_command(OUTPUT ${out}
      COMMAND ${CMAKE_COMMAND} -E make_directory ${PROJECT_BINARY_DIR}/man
      COMMAND ${GZIP_PROGRAM} -9 -n -c ${src} > ${out}
      DEPENDS ${src}
      COMMENT "gzip ${name}")
    list(APPEND MTLSKS_MAN_OUTPUTS ${out})
  else()
    set(out ${src})
  endif()
  install(FILES ${out} DESTINATION ${CMAKE_INSTALL_MANDIR}/man${section})
endforeach()
if(MTLSKS_MAN_OUTPUTS)
  add_custom_target(mtlsks_man ALL DEPENDS ${MTLSKS_MAN_OUTPUTS})
endif()

install(FILES ${PROJECT_SOURCE_DIR}/completion/mtls-keystore
  DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/bash-completion/completions)
install(FILES ${PROJECT_SOURCE_DIR}/README.md DESTINATION ${MTLSKS_DOCDIR})
# The pages README.md links to, at the same relative path.
install(DIRECTORY ${PROJECT_SOURCE_DIR}/docs/ DESTINATION ${MTLSKS_DOCDIR}/docs
  FILES_MATCHING PATTERN "*.md")
install(FILES ${PROJECT_SOURCE_DIR}/examples/openssl-mtlsks.cnf
  DESTINATION ${MTLSKS_DOCDIR}/examples)
install(PROGRAMS ${PROJECT_SOURCE_DIR}/examples/renew-hook
  DESTINATION ${MTLSKS_DOCDIR}/examples)
install(FILES
  ${PROJECT_SOURCE_DIR}/systemd/mtls-keystore-renew.service
  ${PROJECT_SOURCE_DIR}/systemd/mtls-keystore-renew.timer
  DESTINATION ${MTLSKS_SYSTEMD_UNITDIR})

# libmtlsks for other C programs: the static library, its header and a
# pkg-config file (component "dev": the libmtlsks-dev package).
install(TARGETS mtlsks ARCHIVE DESTINATION ${MTLSKS_INSTALL_LIBDIR} COMPONENT dev)
install(FILES ${PROJECT_SOURCE_DIR}/keystore/include/mtlsks/keystore.h
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/mtlsks COMPONENT dev)
file(RELATIVE_PATH MTLSKS_PC_PREFIX_FROM_PCDIR
  /prefix/${MTLSKS_INSTALL_LIBDIR}/pkgconfig /prefix)
configure_file(${PROJECT_SOURCE_DIR}/packaging/mtlsks.pc.in
  ${PROJECT_BINARY_DIR}/packaging/mtlsks.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/packaging/mtlsks.pc
  DESTINATION ${MTLSKS_INSTALL_LIBDIR}/pkgconfig COMPONENT dev)
