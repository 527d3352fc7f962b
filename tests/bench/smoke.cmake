# ctest *_bench_smoke: a very short run (--smoke, or ARGS when given, a
# ;-list) must exit 0 and print the benchmark's ratio or summary line, which
# must match PATTERN. Keeps the benchmarks from rotting.
if(NOT DEFINED ARGS)
  set(ARGS --smoke)
endif()
execute_process(COMMAND ${BENCH} ${ARGS}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
message("${out}${err}")
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${BENCH} ${ARGS} exited with ${rc}")
endif()
if(NOT out MATCHES "${PATTERN}")
  message(FATAL_ERROR "${BENCH} ${ARGS} did not print the line it exists for (${PATTERN})")
endif()
