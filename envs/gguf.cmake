# Included into llama.cpp's own CMake project (CMAKE_PROJECT_llama.cpp_INCLUDE, envs/gguf.setup.yaml):
# llama-cpp-python forces LLAMA_BUILD_COMMON on, but its bindings load only ggml and llama. Skipping llama.cpp's
# `common` library (about half of the compile) changes none of the kernels that are built.
set(LLAMA_BUILD_COMMON OFF CACHE BOOL "" FORCE)
