# ctest sim_bench_smoke: sim_bench.py's backdoor pair for 3 rounds through the
# real mycel-sim. It must exit 0, print the summary line with both trigger
# rates, and leave a JSON and a PNG per run.
file(REMOVE_RECURSE "${OUT}")
execute_process(COMMAND /usr/bin/python3 ${SCRIPT} backdoor --rounds 3 --sim ${SIM} --out ${OUT}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
message("${out}${err}")
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "sim_bench.py backdoor exited with ${rc}")
endif()
if(NOT out MATCHES "backdoor: trigger success on honest nodes [0-9.]+% with trust on, [0-9.]+% with it off")
  message(FATAL_ERROR "sim_bench.py did not print the backdoor summary line")
endif()
foreach(run backdoor-trust-off backdoor-trust-on)
  foreach(ext json png)
    if(NOT EXISTS "${OUT}/${run}.${ext}")
      message(FATAL_ERROR "sim_bench.py left no ${OUT}/${run}.${ext}")
    endif()
  endforeach()
endforeach()
