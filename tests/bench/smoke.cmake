# ctest trainer_bench_smoke: a very short run must exit 0 and print the ratio line.
execute_process(COMMAND ${BENCH} --smoke
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
message("${out}${err}")
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "trainer_bench --smoke exited with ${rc}")
endif()
if(NOT out MATCHES "trainer/bare ratio: [0-9]+\\.[0-9][0-9] \\(trainer [0-9]+k samples/s, bare [0-9]+k samples/s")
  message(FATAL_ERROR "trainer_bench --smoke did not print the ratio line")
endif()
