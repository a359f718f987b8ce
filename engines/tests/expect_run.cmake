# ctest helper: run CMD (a ;-list) and require all of it, where WILL_FAIL or PASS_REGULAR_EXPRESSION alone
# would check one thing: exit code EXPECT_EXIT, stdout matching EXPECT_STDOUT, stderr matching EXPECT_STDERR
# (each a regex, optional), and no sanitizer report (AddressSanitizer, UndefinedBehaviorSanitizer, LeakSanitizer).
#   cmake -DCMD=prog;arg;... -DEXPECT_EXIT=2 -DEXPECT_STDOUT=regex -DEXPECT_STDERR=regex -P expect_run.cmake
execute_process(COMMAND ${CMD} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
set(report "command: ${CMD}\nexit: ${rc}\nstdout: ${out}\nstderr: ${err}")
if(DEFINED EXPECT_EXIT AND NOT rc STREQUAL "${EXPECT_EXIT}")
  message(FATAL_ERROR "exit ${rc}, expected ${EXPECT_EXIT}\n${report}")
endif()
if(DEFINED EXPECT_STDOUT AND NOT out MATCHES "${EXPECT_STDOUT}")
  message(FATAL_ERROR "stdout does not match '${EXPECT_STDOUT}'\n${report}")
endif()
if(DEFINED EXPECT_STDERR AND NOT err MATCHES "${EXPECT_STDERR}")
  message(FATAL_ERROR "stderr does not match '${EXPECT_STDERR}'\n${report}")
endif()
if("${out}${err}" MATCHES "(AddressSanitizer|UndefinedBehaviorSanitizer|LeakSanitizer|runtime error:)")
  message(FATAL_ERROR "a sanitizer reported\n${report}")
endif()
