# Finds every library reid-train uses; each is installed by scripts/install-deps.sh on Debian 12.

# LibTorch: Debian's libtorch-dev (CPU, 1.13) or an official / Python-wheel LibTorch through
# Torch_DIR or CMAKE_PREFIX_PATH (possibly CUDA, 2.x).
find_package(Torch CONFIG REQUIRED)
message(STATUS "LibTorch ${Torch_VERSION} (${TORCH_INSTALL_PREFIX})")
# Debian's TorchConfig appends its flags to CMAKE_CXX_FLAGS; targets get them through `torch` too.

# Python-wheel LibTorch 2.x exports its own copies of some libstdc++ functions: on the GPU machine
# std::filesystem::remove_all bound to libtorch.so's copy (libtorch comes before libstdc++ among a
# binary's needed libraries) and crashed by calling a null pointer. Naming libstdc++ first keeps
# the C++ runtime's own definitions. Harmless elsewhere; forced with -DREID_LINK_STDCXX_FIRST=ON.
if(NOT DEFINED REID_LINK_STDCXX_FIRST)
  set(REID_LINK_STDCXX_FIRST OFF)
  if(Torch_VERSION VERSION_GREATER_EQUAL 2 AND CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    set(REID_LINK_STDCXX_FIRST ON)
  endif()
endif()
if(REID_LINK_STDCXX_FIRST)
  add_link_options("LINKER:--push-state,--no-as-needed" "-lstdc++" "LINKER:--pop-state")
endif()

find_package(MPI REQUIRED COMPONENTS C)
# C API only: the deprecated MPI C++ bindings would need libmpi_cxx.
add_compile_definitions(OMPI_SKIP_MPICXX=1 MPICH_SKIP_MPICXX=1)
find_package(Protobuf REQUIRED)
# Our own target for protobuf: a CUDA LibTorch's config can define `protobuf::libprotobuf` as an
# empty interface target (its protobuf is built in), which would drop -lprotobuf from our links.
add_library(reid_protobuf INTERFACE)
target_link_libraries(reid_protobuf INTERFACE ${Protobuf_LIBRARIES})
target_include_directories(reid_protobuf INTERFACE ${Protobuf_INCLUDE_DIRS})
find_package(gflags CONFIG REQUIRED)
find_package(glog CONFIG REQUIRED)
find_package(prometheus-cpp CONFIG REQUIRED)
find_package(libjpeg-turbo CONFIG REQUIRED)
find_package(PkgConfig REQUIRED)
pkg_check_modules(PCRE2 REQUIRED IMPORTED_TARGET libpcre2-8)
find_package(Threads REQUIRED)
if(REID_BUILD_TESTS)
  find_package(GTest REQUIRED)
  include(GoogleTest)
endif()

# gflags' config exports `gflags` (shared or static); give it one stable name.
if(TARGET gflags::gflags)
  set(REID_GFLAGS gflags::gflags)
elseif(TARGET gflags_shared)
  set(REID_GFLAGS gflags_shared)
else()
  set(REID_GFLAGS gflags)
endif()

# CUDA and NCCL: compiled where the toolkit is present, exercised where a GPU is.
set(REID_HAVE_CUDA OFF)
set(REID_HAVE_NCCL OFF)
if(NOT REID_WITH_CUDA STREQUAL "OFF")
  find_package(CUDAToolkit QUIET)
  if(CUDAToolkit_FOUND)
    set(REID_HAVE_CUDA ON)
    find_path(NCCL_INCLUDE_DIR nccl.h
      HINTS ${CUDAToolkit_INCLUDE_DIRS} ENV NCCL_HOME PATH_SUFFIXES include)
    find_library(NCCL_LIBRARY nccl
      HINTS ${CUDAToolkit_LIBRARY_DIR} ENV NCCL_HOME PATH_SUFFIXES lib lib64)
    if(NCCL_INCLUDE_DIR AND NCCL_LIBRARY)
      set(REID_HAVE_NCCL ON)
      add_library(reid_nccl_lib UNKNOWN IMPORTED)
      set_target_properties(reid_nccl_lib PROPERTIES IMPORTED_LOCATION ${NCCL_LIBRARY}
        INTERFACE_INCLUDE_DIRECTORIES ${NCCL_INCLUDE_DIR})
    endif()
  elseif(REID_WITH_CUDA STREQUAL "ON")
    message(FATAL_ERROR "REID_WITH_CUDA=ON but no CUDA toolkit was found")
  endif()
endif()
# Whether LibTorch itself can run CUDA tensors (official CUDA builds); Debian's cannot.
set(REID_TORCH_CUDA OFF)
if(TARGET torch_cuda OR TORCH_CUDA_LIBRARIES)
  set(REID_TORCH_CUDA ON)
endif()
message(STATUS "CUDA toolkit: ${REID_HAVE_CUDA}, NCCL: ${REID_HAVE_NCCL}, CUDA LibTorch: ${REID_TORCH_CUDA}")

# Adds a gtest binary `name` from `sources`, linked to `libs`, registered with ctest.
# reid_add_test(NAME SOURCES foo_test.cc ... LIBS ... LABELS ...): a GoogleTest binary whose tests
# ctest discovers. One naming pattern: NAME is the folder's last component and the first source's
# stem (data/sampler_test.cc -> data_sampler_test; monitoring/report/report_test.cc ->
# report_report_test); another name is a configure error.
function(reid_add_test name)
  cmake_parse_arguments(ARG "" "" "SOURCES;LIBS;LABELS" ${ARGN})
  list(GET ARG_SOURCES 0 first)
  get_filename_component(stem ${first} NAME_WE)
  get_filename_component(folder ${CMAKE_CURRENT_SOURCE_DIR} NAME)
  if(NOT name STREQUAL "${folder}_${stem}")
    message(FATAL_ERROR "test target ${name}: name it ${folder}_${stem} (folder_source)")
  endif()
  if(NOT REID_BUILD_TESTS)
    return()
  endif()
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_LIBS} GTest::gtest GTest::gtest_main)
  set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  gtest_discover_tests(${name} WORKING_DIRECTORY ${CMAKE_SOURCE_DIR}
    PROPERTIES LABELS "${ARG_LABELS}" DISCOVERY_TIMEOUT 60)
endfunction()
