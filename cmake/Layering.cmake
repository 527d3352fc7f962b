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
  get_target_property(direct ${target} LINK_LIBRARIES)
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
# the include check every library of a module depends on.
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
    file(GLOB module_sources CONFIGURE_DEPENDS
         ${PROJECT_SOURCE_DIR}/src/${m}/*.h ${PROJECT_SOURCE_DIR}/src/${m}/*.cc)
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
    COMMENT "Checking module layering (includes against link edges)"
    VERBATIM)
  add_custom_target(mycel_layering ALL DEPENDS ${stamp})
  foreach(m IN LISTS modules)
    foreach(t IN LISTS targets_${m})
      add_dependencies(${t} mycel_layering)
    endforeach()
  endforeach()
endfunction()
