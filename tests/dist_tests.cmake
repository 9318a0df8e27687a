# Multi-process tests of trainer/distributed/ (ctest label `mpi`): each gtest binary runs under
# `mpirun -np 2` and `-np 3 --oversubscribe` with the environment of scripts/mpi_env.sh.
if(NOT REID_BUILD_TESTS OR NOT TARGET reid_dist)
  return()
endif()
# The variables that scripts/mpi_env.sh exports (its "export NAME=VALUE" lines), read from the
# script itself so that the tests and the shell scripts cannot drift apart.
file(STRINGS ${CMAKE_SOURCE_DIR}/scripts/mpi_env.sh REID_MPI_ENV_LINES REGEX "^export [A-Za-z0-9_]+=")
set(REID_MPI_ENV)
foreach(line IN LISTS REID_MPI_ENV_LINES)
  string(REGEX REPLACE "^export ([A-Za-z0-9_]+=[^ \t#]*).*$" "\\1" assignment "${line}")
  list(APPEND REID_MPI_ENV "${assignment}")
endforeach()
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/scripts/mpi_env.sh)

function(reid_dist_mpi_test name)
  add_executable(${name} ${name}.cc dist_mpi_main.cc)
  target_link_libraries(${name} PRIVATE reid_dist GTest::gtest)
  set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  foreach(np 2 3)
    add_test(NAME ${name}_np${np}
      COMMAND ${MPIEXEC_EXECUTABLE} -np ${np} --oversubscribe $<TARGET_FILE:${name}>
      WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
    set_tests_properties(${name}_np${np} PROPERTIES LABELS "mpi" TIMEOUT 300
      ENVIRONMENT "${REID_MPI_ENV}")
  endforeach()
endfunction()

reid_dist_mpi_test(dist_collectives_test)
reid_dist_mpi_test(dist_grad_sync_test)
reid_dist_mpi_test(dist_equivalence_test)
reid_dist_mpi_test(dist_stop_signal_test)

add_executable(dist_failure_helper dist_failure_helper.cc)
target_link_libraries(dist_failure_helper PRIVATE reid_dist_core)
set_target_properties(dist_failure_helper PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
foreach(np 2 3)
  add_test(NAME dist_failure_np${np}
    COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/dist_failure_test.sh ${MPIEXEC_EXECUTABLE}
            $<TARGET_FILE:dist_failure_helper> ${np}
    WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  set_tests_properties(dist_failure_np${np} PROPERTIES LABELS "mpi" TIMEOUT 300)
endforeach()
if(TARGET nccl_comm_test)
  foreach(np 1 2)
    add_test(NAME dist_nccl_mpi_np${np}
      COMMAND ${MPIEXEC_EXECUTABLE} -np ${np} --oversubscribe $<TARGET_FILE:nccl_comm_test>
      WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
    set_tests_properties(dist_nccl_mpi_np${np} PROPERTIES LABELS "gpu;mpi" TIMEOUT 300 SKIP_RETURN_CODE 77
      ENVIRONMENT "${REID_MPI_ENV}")
  endforeach()
endif()
