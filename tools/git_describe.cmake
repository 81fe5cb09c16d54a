# Run at every build (tools/CMakeLists.txt): writes OUT, a definition of kGitDescribe holding
# `git describe` of SOURCE_DIR ("" outside a git checkout, e.g. a release tarball). configure_file
# leaves OUT untouched when the text is unchanged, so only a new commit recompiles and relinks.
set(describe "")
if(EXISTS "${SOURCE_DIR}/.git")
  execute_process(COMMAND git -C "${SOURCE_DIR}" describe --always --dirty --tags
                  OUTPUT_VARIABLE describe OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE failed)
  if(failed)
    set(describe "")
  endif()
endif()
file(WRITE "${OUT}.tmp" "// Written by tools/git_describe.cmake at build time.\n"
     "namespace storemove::tools {\nextern const char* const kGitDescribe;\n"
     "const char* const kGitDescribe = \"${describe}\";\n}\n")
configure_file("${OUT}.tmp" "${OUT}" COPYONLY)
file(REMOVE "${OUT}.tmp")
