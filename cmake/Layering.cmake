# The module table as the build enforces it (docs/ARCHITECTURE.md, "Modules").
# A module's sources may include a header of another module only if one of
# the module's targets links that module's library, directly or through a
# PUBLIC link of what it links. The edges are read from the targets'
# link lists, so they are written once, in each module's CMakeLists.txt; an
# include that runs upward (or sideways, unlinked) fails the build with the
# file and the missing edge, before anything compiles.

# Libraries a target can see headers of: its own links, then what those
# export (INTERFACE_LINK_LIBRARIES without $<LINK_ONLY:...>, i.e. PUBLIC ones).
function(_mycel_visible target out)
  get_target_property(type ${target} TYPE)
  if(type STREQUAL "INTERFACE_LIBRARY")  # a header-only target has only what it exports
    get_target_property(direct ${target} INTERFACE_LINK_LIBRARIES)
  else()
    get_target_property(direct ${target} LINK_LIBRARIES)
  endif()
  set(seen "")
  set(queue "")
  if(direct)
    list(APPEND queue ${direct})
  endif()
  while(queue)
    list(POP_FRONT queue lib)
    if(NOT TARGET ${lib} OR lib IN_LIST seen)
      continue()
    endif()
    list(APPEND seen ${lib})
    get_target_property(exported ${lib} INTERFACE_LINK_LIBRARIES)
    if(exported)
      foreach(e IN LISTS exported)
        if(NOT e MATCHES "^\\$<")
          list(APPEND queue ${e})
        endif()
      endforeach()
    endif()
  endwhile()
  set(${out} ${seen} PARENT_SCOPE)
endfunction()

# mycel_check_layering(MODULE <name> TARGETS <t>... [MODULE ...]), modules
# bottom-up: refuses a link that runs upward now, at configure time, and adds
# the include check every library of a module depends on. A module is a
# folder of src/ ("model"), or one header of a folder ("model/options": its
# .h and .cc), listed apart when it sits lower than the rest of its folder:
# an include of "model/options.h" then counts as that module, every other
# "model/..." as the folder's.
include(${CMAKE_CURRENT_LIST_DIR}/LayeringFiles.cmake)

function(mycel_check_layering)
  set(modules "")
  set(current "")
  foreach(arg IN LISTS ARGN)
    if(arg STREQUAL "MODULE")
      set(expect_name TRUE)
    elseif(expect_name)
      set(current ${arg})
      list(APPEND modules ${arg})
      set(targets_${arg} "")
      set(expect_name FALSE)
    elseif(NOT arg STREQUAL "TARGETS")
      list(APPEND targets_${current} ${arg})
    endif()
  endforeach()

  set(rules "")
  set(sources "")
  foreach(m IN LISTS modules)
    set(allowed "")
    foreach(t IN LISTS targets_${m})
      _mycel_visible(${t} visible)
      foreach(lib IN LISTS visible)
        foreach(other IN LISTS modules)
          if(lib IN_LIST targets_${other} AND NOT other IN_LIST allowed)
            list(APPEND allowed ${other})
          endif()
        endforeach()
      endforeach()
    endforeach()
    # The modules are listed bottom-up: a link to one listed later runs upward.
    list(FIND modules ${m} rank)
    foreach(other IN LISTS allowed)
      list(FIND modules ${other} other_rank)
      if(other_rank GREATER rank)
        message(FATAL_ERROR "module '${m}' links module '${other}', which sits above it in the module "
                            "table (docs/ARCHITECTURE.md): move the code down instead")
      endif()
    endforeach()
    string(APPEND rules "set(ALLOWED_${m} \"${allowed}\")\n")
    if(NOT m MATCHES "/")  # a new file in a folder reconfigures
      file(GLOB unused CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/src/${m}/*.h ${PROJECT_SOURCE_DIR}/src/${m}/*.cc)
    endif()
    _mycel_module_files(${m} "${modules}" ${PROJECT_SOURCE_DIR}/src module_sources)
    list(APPEND sources ${module_sources})
  endforeach()
  string(APPEND rules "set(MODULES \"${modules}\")\n")
  set(rules_file ${PROJECT_BINARY_DIR}/layering/rules.cmake)
  file(WRITE ${rules_file} "${rules}")

  set(stamp ${PROJECT_BINARY_DIR}/layering/checked.stamp)
  add_custom_command(
    OUTPUT ${stamp}
    COMMAND ${CMAKE_COMMAND} -DRULES=${rules_file} -DSRC=${PROJECT_SOURCE_DIR}/src
            -P ${PROJECT_SOURCE_DIR}/cmake/CheckLayering.cmake
    COMMAND ${CMAKE_COMMAND} -E touch ${stamp}
    DEPENDS ${sources} ${rules_file} ${PROJECT_SOURCE_DIR}/cmake/CheckLayering.cmake
            ${PROJECT_SOURCE_DIR}/cmake/LayeringFiles.cmake
    COMMENT "Checking module layering (includes against link edges)"
    VERBATIM)
  add_custom_target(mycel_layering ALL DEPENDS ${stamp})
  foreach(m IN LISTS modules)
    foreach(t IN LISTS targets_${m})
      add_dependencies(${t} mycel_layering)
    endforeach()
  endforeach()
endfunction()

# mycel_forbid_links(<target> <why> <library>...): fails at configure time
# when <target> would be linked with one of the libraries, directly or
# through anything it links (a static library's private links reach the
# link line too). Keeps libtorch out of the CLI and the public client, which
# see config and through it the modules' options headers only.
function(mycel_forbid_links target why)
  get_target_property(links ${target} LINK_LIBRARIES)
  set(queue "")
  _mycel_link_names("${links}" ${target} queue)
  set(seen "")
  while(queue)
    list(POP_FRONT queue lib)
    if(lib IN_LIST seen)
      continue()
    endif()
    list(APPEND seen ${lib})
    if(lib IN_LIST ARGN)
      set(chain ${lib})
      set(at ${lib})
      while(NOT at STREQUAL target)
        set(at ${via_${at}})
        string(PREPEND chain "${at} -> ")
      endwhile()
      message(FATAL_ERROR "${chain}: ${why}")
    endif()
    if(TARGET ${lib})
      get_target_property(exported ${lib} INTERFACE_LINK_LIBRARIES)
      _mycel_link_names("${exported}" ${lib} queue)
    endif()
  endwhile()
endfunction()

# Appends to <queue> the libraries of a link list (a static library's
# $<LINK_ONLY:x> unwrapped, other generator expressions left out), noting in
# via_<lib>, in the caller's scope, which target brought each in first.
macro(_mycel_link_names links from queue)
  foreach(_e IN ITEMS ${links})
    string(REGEX REPLACE "^\\$<LINK_ONLY:(.*)>$" "\\1" _e "${_e}")
    if(_e AND NOT _e MATCHES "^\\$<" AND NOT _e MATCHES "-NOTFOUND$")
      if(NOT DEFINED via_${_e})
        set(via_${_e} ${from})
      endif()
      list(APPEND ${queue} ${_e})
    endif()
  endforeach()
endmacro()
