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
              ${CMAKE_SOURCE_DIR}/docs/fetch.md
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
  # apop.service and the system template apop-fetch@.service; the user unit
  # apop-fetch.service goes to lib/systemd/user (docs/fetch.md).
  foreach(_pair \"apop.service;system\" \"apop-fetch@.service;system\" \"apop-fetch.service;user\")
    list(GET _pair 0 _name)
    list(GET _pair 1 _kind)
    file(READ \"${CMAKE_SOURCE_DIR}/contrib/systemd/\${_name}\" _unit)
    string(REPLACE \"/usr/local/bin/apop \" \"\${_bindir}/apop \" _unit \"\${_unit}\")
    set(_dest \"\$ENV{DESTDIR}\${CMAKE_INSTALL_PREFIX}/lib/systemd/\${_kind}\")
    file(MAKE_DIRECTORY \"\${_dest}\")
    message(STATUS \"Installing: \${_dest}/\${_name}\")
    file(WRITE \"\${_dest}/\${_name}\" \"\${_unit}\")
  endforeach()
")
