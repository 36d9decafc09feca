# Finds every dependency; a missing one stops configure and names the Debian/Ubuntu package.
# scripts/setup.sh installs all of them.

macro(sambay_require found what package)
  if(NOT ${found})
    message(FATAL_ERROR "sambay: ${what} not found. Install it with: "
                        "apt-get install ${package}   (or run scripts/setup.sh)")
  endif()
endmacro()

find_package(MPI COMPONENTS CXX)
sambay_require(MPI_CXX_FOUND "MPI (OpenMPI)" "libopenmpi-dev openmpi-bin")

find_package(HDF5 COMPONENTS C)
sambay_require(HDF5_FOUND "HDF5" "libhdf5-dev")

set(Boost_USE_STATIC_LIBS ON)  # the binary must run where only MPI/HDF5/NCCL shared libraries exist
find_package(Boost CONFIG COMPONENTS program_options)
sambay_require(Boost_FOUND "Boost.Program_options" "libboost-program-options-dev")

find_package(fmt CONFIG)
sambay_require(fmt_FOUND "fmt" "libfmt-dev")

find_package(ZLIB)
sambay_require(ZLIB_FOUND "zlib" "zlib1g-dev")

# The BPE tokenizer's pre-tokenisation regex: Unicode properties and JIT.
find_package(PkgConfig)
sambay_require(PKG_CONFIG_FOUND "pkg-config" "pkg-config")
pkg_check_modules(PCRE2 IMPORTED_TARGET libpcre2-8)
sambay_require(PCRE2_FOUND "PCRE2" "libpcre2-dev")

find_package(nlohmann_json 3.10 CONFIG)
sambay_require(nlohmann_json_FOUND "nlohmann-json" "nlohmann-json3-dev")

find_package(GTest CONFIG)
if(NOT GTest_FOUND)
  find_package(GTest MODULE)
endif()
sambay_require(GTest_FOUND "GoogleTest" "libgtest-dev")

# SAMBAY_BLAS_LIBRARY overrides the BLAS library with any CBLAS-providing one (tools/device_build.sh
# uses the small reference BLAS so that the build it ships to the GPU machine stays small).
set(SAMBAY_BLAS_LIBRARY "" CACHE FILEPATH "CBLAS library to link instead of OpenBLAS")
if(SAMBAY_BLAS_LIBRARY)
  set(BLAS_LIBRARIES ${SAMBAY_BLAS_LIBRARY})
  set(BLAS_FOUND TRUE)
else()
  set(BLA_VENDOR OpenBLAS)
  find_package(BLAS)
endif()
find_path(CBLAS_INCLUDE_DIR cblas.h PATH_SUFFIXES openblas openblas-pthread openblas-openmp)
if(NOT BLAS_FOUND OR NOT CBLAS_INCLUDE_DIR)
  set(BLAS_FOUND FALSE)
endif()
sambay_require(BLAS_FOUND "OpenBLAS (CBLAS)" "libopenblas-dev")
add_library(sambay_blas INTERFACE)
target_link_libraries(sambay_blas INTERFACE ${BLAS_LIBRARIES})
target_include_directories(sambay_blas INTERFACE ${CBLAS_INCLUDE_DIR})

find_package(OpenMP COMPONENTS CXX)
sambay_require(OpenMP_CXX_FOUND "OpenMP" "libgomp1 (part of build-essential)")

# CUDA backend.
set(SAMBAY_HAVE_CUDA OFF)
if(NOT SAMBAY_CUDA STREQUAL "OFF")
  include(CheckLanguage)
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    enable_language(CUDA)
    # CMake 3.25 predates nvcc 13 and does not know its C++20 flag.
    set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
    set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
    set(CMAKE_CUDA_STANDARD 20)
    set(CMAKE_CUDA_STANDARD_REQUIRED ON)
    add_compile_options($<$<COMPILE_LANGUAGE:CUDA>:--expt-relaxed-constexpr>)
    find_package(CUDAToolkit REQUIRED)
    find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS})
    find_library(NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR})
    if(NOT NCCL_INCLUDE_DIR OR NOT NCCL_LIBRARY)
      message(FATAL_ERROR "sambay: NCCL not found beside CUDA ${CUDAToolkit_VERSION}. "
                          "Install libnccl-dev (NVIDIA's repository) or set SAMBAY_CUDA=OFF.")
    endif()
    add_library(sambay_nccl INTERFACE)
    target_include_directories(sambay_nccl INTERFACE ${NCCL_INCLUDE_DIR})
    target_link_libraries(sambay_nccl INTERFACE ${NCCL_LIBRARY})
    set(SAMBAY_HAVE_CUDA ON)
    message(STATUS "sambay: CUDA backend ON (nvcc ${CMAKE_CUDA_COMPILER_VERSION}, archs ${CMAKE_CUDA_ARCHITECTURES})")
  elseif(SAMBAY_CUDA STREQUAL "ON")
    message(FATAL_ERROR "sambay: SAMBAY_CUDA=ON but nvcc was not found. Install the CUDA Toolkit "
                        "(nvidia-cuda-toolkit) or set CMAKE_CUDA_COMPILER.")
  endif()
endif()
if(NOT SAMBAY_HAVE_CUDA)
  message(STATUS "sambay: CUDA backend OFF (CPU only)")
endif()
