# Included into llama.cpp's own CMake project (CMAKE_PROJECT_llama.cpp_INCLUDE, envs/gguf.setup.yaml).
# llama-cpp-python forces LLAMA_BUILD_COMMON on, but its bindings load only ggml and llama. Skipping llama.cpp's
# `common` library (about half of the compile) changes none of the kernels that are built.
set(LLAMA_BUILD_COMMON OFF CACHE BOOL "" FORCE)
# llama.cpp compiles for this CPU (-march=native). On a CPU with AMX that includes its AMX backend, whose
# ggml_backend_amx_mul_mat segfaults on the first decode of every quantized GGUF (seen here on all of them;
# ggml-org/llama.cpp#20824). GCC's explicit -mno-* flags win over -march=native whatever their order, so this
# leaves out AMX and nothing else; a CPU without AMX gets the same build as before.
add_compile_options(-mno-amx-tile -mno-amx-int8 -mno-amx-bf16)
