# ctest *_bench_smoke: a very short run (--smoke) must exit 0 and print the
# benchmark's ratio line, which must match PATTERN. Keeps the benchmarks from rotting.
execute_process(COMMAND ${BENCH} --smoke
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
message("${out}${err}")
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${BENCH} --smoke exited with ${rc}")
endif()
if(NOT out MATCHES "${PATTERN}")
  message(FATAL_ERROR "${BENCH} --smoke did not print the ratio line (${PATTERN})")
endif()
