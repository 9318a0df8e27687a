# Run at build time (cmake -P): writes OUT from IN with the current git revision; the file is only
# touched when its content changes, so an unchanged revision rebuilds nothing.
execute_process(COMMAND git rev-parse --short=12 HEAD WORKING_DIRECTORY ${SRC}
  OUTPUT_VARIABLE REID_GIT_SHA OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE rc)
if(NOT rc EQUAL 0 OR REID_GIT_SHA STREQUAL "")
  set(REID_GIT_SHA "unknown")
else()
  execute_process(COMMAND git status --porcelain --untracked-files=no WORKING_DIRECTORY ${SRC}
    OUTPUT_VARIABLE dirty OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
  if(NOT dirty STREQUAL "")
    string(APPEND REID_GIT_SHA "-dirty")
  endif()
endif()
configure_file(${IN} ${OUT} @ONLY)
