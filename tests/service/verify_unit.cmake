# Fails on any diagnostic systemd-analyze prints about the unit (it exits 0 on
# some warnings, so the output is checked too).
execute_process(COMMAND ${ANALYZE} verify --man=no ${UNIT}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
string(REGEX MATCHALL "myceld\\.service[^\n]*" problems "${out}${err}")
if(NOT rc EQUAL 0 OR problems)
  message(FATAL_ERROR "systemd-analyze verify failed (${rc}):\n${out}${err}")
endif()
message(STATUS "systemd-analyze verify: ok")
