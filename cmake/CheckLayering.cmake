# cmake -DRULES=<rules.cmake> -DSRC=<src dir> -P CheckLayering.cmake
# Fails when a file of module M includes "X/..." for a module X that M's
# targets do not link (Layering.cmake writes the rules from the link lists).
cmake_minimum_required(VERSION 3.18)
include(${RULES})
set(errors 0)
foreach(m IN LISTS MODULES)
  file(GLOB files ${SRC}/${m}/*.h ${SRC}/${m}/*.cc)
  foreach(f IN LISTS files)
    file(STRINGS ${f} includes REGEX "^[ \t]*#[ \t]*include[ \t]*\"[a-z_]+/")
    foreach(line IN LISTS includes)
      string(REGEX REPLACE "^[ \t]*#[ \t]*include[ \t]*\"([a-z_]+)/.*$" "\\1" other "${line}")
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
