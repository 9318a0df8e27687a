# Multi-process tests of trainer/distributed/ (ctest label `mpi`): each gtest binary runs under
# `mpirun -np 2` and `-np 3 --oversubscribe` with the environment of scripts/mpi_env.sh.
if(NOT REID_BUILD_TESTS OR NOT TARGET reid_dist)
  return()
endif()
set(REID_MPI_ENV
  OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
  OMPI_MCA_hwloc_base_binding_policy=none OMPI_MCA_btl=self,vader,tcp OMPI_MCA_pml=ob1
  OMPI_MCA_btl_tcp_if_include=lo OMPI_MCA_oob_tcp_if_include=lo OMPI_MCA_odls_base_sigkill_timeout=0)

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
