# cmake -DRULES=<rules.cmake> -DSRC=<src dir> -P CheckLayering.cmake
# Fails when a file of module M includes "X/..." (or "X/h.h" of a module
# "X/h") for a module that M's targets do not link (Layering.cmake writes the
# rules from the link lists).
cmake_minimum_required(VERSION 3.18)
include(${RULES})
include(${CMAKE_CURRENT_LIST_DIR}/LayeringFiles.cmake)
set(errors 0)
foreach(m IN LISTS MODULES)
  _mycel_module_files(${m} "${MODULES}" ${SRC} files)
  foreach(f IN LISTS files)
    file(STRINGS ${f} includes REGEX "^[ \t]*#[ \t]*include[ \t]*\"[a-z_]+/")
    foreach(line IN LISTS includes)
      # "dir/stem.h" is module "dir/stem" when that is listed, else "dir".
      string(REGEX REPLACE "^[ \t]*#[ \t]*include[ \t]*\"([a-z_]+)/.*$" "\\1" other "${line}")
      string(REGEX REPLACE "^[ \t]*#[ \t]*include[ \t]*\"([a-z_]+/[a-z0-9_]+)\\.[a-z]+\".*$" "\\1" header
             "${line}")
      if(header IN_LIST MODULES)
        set(other ${header})
      endif()
      if(other STREQUAL m OR NOT other IN_LIST MODULES OR other IN_LIST ALLOWED_${m})
        continue()
      endif()
      file(RELATIVE_PATH rel ${SRC}/.. ${f})
      string(STRIP "${line}" line)
      message(SEND_ERROR "${rel}: ${line}: module '${m}' does not link module '${other}' "
                         "(its CMakeLists.txt; may see: ${ALLOWED_${m}}). "
                         "If the edge belongs in the module table (docs/ARCHITECTURE.md), link it; "
                         "if it runs upward, move the code down.")
      math(EXPR errors "${errors} + 1")
    endforeach()
  endforeach()
endforeach()
if(errors GREATER 0)
  message(FATAL_ERROR "${errors} include(s) outside the module table")
endif()
