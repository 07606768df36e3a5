# Install an edgenn build tree into a fresh prefix, then configure, build and run the
# consumer project (tests/consumer) against that prefix through find_package(edgenn).
# Used by the CTest test `install_consumer_find_package` and by tools/test.sh (stage install):
#   cmake -DEDGENN_BUILD_DIR=<configured and built edgenn build dir> -DWORK_DIR=<scratch dir>
#         [-DGENERATOR=Ninja] [-DCXX=<compiler>] [-DMAKE_PROGRAM=<ninja>] -P run_consumer.cmake
cmake_minimum_required(VERSION 3.21)
foreach(_v EDGENN_BUILD_DIR WORK_DIR)
  if(NOT DEFINED ${_v})
    message(FATAL_ERROR "run_consumer.cmake: -D${_v}=... is required")
  endif()
endforeach()
get_filename_component(_src "${CMAKE_CURRENT_LIST_DIR}" ABSOLUTE)
set(_prefix "${WORK_DIR}/prefix")
set(_bin "${WORK_DIR}/build")

function(_run what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE _rc OUTPUT_VARIABLE _out ERROR_VARIABLE _out)
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "consumer test: ${what} failed (${_rc}):\n${_out}")
  endif()
  message(STATUS "consumer test: ${what}: ok")
  set(_last_output "${_out}" PARENT_SCOPE)
endfunction()

file(REMOVE_RECURSE "${WORK_DIR}")
_run("install ${EDGENN_BUILD_DIR} into ${_prefix}" ${CMAKE_COMMAND} --install "${EDGENN_BUILD_DIR}" --prefix "${_prefix}")
if(NOT EXISTS "${_prefix}/include/edgenn/edgenn.hpp")
  message(FATAL_ERROR "consumer test: the install has no include/edgenn/edgenn.hpp")
endif()

set(_cfg -S "${_src}" -B "${_bin}" -DCMAKE_BUILD_TYPE=Release "-DCMAKE_PREFIX_PATH=${_prefix}"
    -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF)
if(GENERATOR)
  list(APPEND _cfg -G "${GENERATOR}")
endif()
if(CXX)
  list(APPEND _cfg "-DCMAKE_CXX_COMPILER=${CXX}")
endif()
if(MAKE_PROGRAM)
  list(APPEND _cfg "-DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM}")
endif()
_run("configure the consumer" ${CMAKE_COMMAND} ${_cfg})

# The package must come from the prefix, not from the source tree or a system install.
file(STRINGS "${_bin}/CMakeCache.txt" _dir REGEX "^edgenn_DIR:")
string(REGEX REPLACE "^edgenn_DIR:[A-Z]+=" "" _dir "${_dir}")
file(REAL_PATH "${_prefix}" _real_prefix)
file(REAL_PATH "${_dir}" _real_dir)
string(FIND "${_real_dir}" "${_real_prefix}/" _at)
if(NOT _at EQUAL 0)
  message(FATAL_ERROR "consumer test: edgenn was found in '${_dir}', not in the install prefix '${_prefix}'")
endif()

_run("build the consumer" ${CMAKE_COMMAND} --build "${_bin}")
_run("run the consumer" "${_bin}/app")
message(STATUS "consumer test: ${_last_output}")
