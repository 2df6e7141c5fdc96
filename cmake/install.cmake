# `cmake --install BUILD [--prefix P]`: the binary, the man page apop(8), the
# example configuration, and the systemd unit with its sysusers/tmpfiles
# snippets. Included from the top-level CMakeLists.txt.
include(GNUInstallDirs)

install(TARGETS apop RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(FILES ${CMAKE_SOURCE_DIR}/docs/apop.8 DESTINATION ${CMAKE_INSTALL_MANDIR}/man8)
install(FILES ${CMAKE_SOURCE_DIR}/contrib/apop.toml
        DESTINATION ${CMAKE_INSTALL_DOCDIR}/examples)
install(FILES ${CMAKE_SOURCE_DIR}/README.md ${CMAKE_SOURCE_DIR}/docs/service.md
              ${CMAKE_SOURCE_DIR}/docs/configuration.md ${CMAKE_SOURCE_DIR}/docs/security.md
        DESTINATION ${CMAKE_INSTALL_DOCDIR})
# systemd looks in PREFIX/lib/systemd/system for /usr and /usr/local alike
# (not lib64 or a multiarch directory, whatever CMAKE_INSTALL_LIBDIR says).
install(FILES ${CMAKE_SOURCE_DIR}/contrib/systemd/apop-sysusers.conf
        DESTINATION lib/sysusers.d RENAME apop.conf)
install(FILES ${CMAKE_SOURCE_DIR}/contrib/systemd/apop-tmpfiles.conf
        DESTINATION lib/tmpfiles.d RENAME apop.conf)
# The unit names the installed binary: its ExecStart path follows the prefix
# given at install time (cmake --install --prefix), not only at configure time.
install(CODE "
  set(_bindir \"${CMAKE_INSTALL_BINDIR}\")
  if(NOT IS_ABSOLUTE \"\${_bindir}\")
    set(_bindir \"\${CMAKE_INSTALL_PREFIX}/\${_bindir}\")
  endif()
  file(READ \"${CMAKE_SOURCE_DIR}/contrib/systemd/apop.service\" _unit)
  string(REPLACE \"/usr/local/bin/apop \" \"\${_bindir}/apop \" _unit \"\${_unit}\")
  set(_dest \"\$ENV{DESTDIR}\${CMAKE_INSTALL_PREFIX}/lib/systemd/system\")
  file(MAKE_DIRECTORY \"\${_dest}\")
  message(STATUS \"Installing: \${_dest}/apop.service\")
  file(WRITE \"\${_dest}/apop.service\" \"\${_unit}\")
")
