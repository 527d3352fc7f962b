# The sources of one module of the layering (Layering.cmake, CheckLayering.cmake):
# "dir" is src/dir/*.h and *.cc, less the headers listed as modules of their
# own ("dir/stem": src/dir/stem.h and stem.cc).
function(_mycel_module_files module modules src out)
  if(module MATCHES "/")
    file(GLOB files ${src}/${module}.h ${src}/${module}.cc)
  else()
    file(GLOB files ${src}/${module}/*.h ${src}/${module}/*.cc)
    foreach(other IN LISTS modules)
      if(other MATCHES "^${module}/")
        list(REMOVE_ITEM files ${src}/${other}.h ${src}/${other}.cc)
      endif()
    endforeach()
  endif()
  set(${out} ${files} PARENT_SCOPE)
endfunction()
