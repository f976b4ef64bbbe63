# Included into llama.cpp's own CMake project (CMAKE_PROJECT_llama.cpp_INCLUDE, envs/gguf.setup.yaml).
# llama.cpp compiles for this CPU (-march=native). On a CPU with AMX that includes its AMX backend, whose
# ggml_backend_amx_mul_mat segfaults on the first decode of every quantized GGUF (seen here on all of them;
# ggml-org/llama.cpp#20824). GCC's explicit -mno-* flags win over -march=native whatever their order, so this
# leaves out AMX and nothing else; a CPU without AMX gets the same build as before.
add_compile_options(-mno-amx-tile -mno-amx-int8 -mno-amx-bf16)

# Importance-matrix quants need llama.cpp's own llama-imatrix and llama-quantize: the bindings cannot hand
# llama_model_quantize an importance matrix (its `imatrix` parameter is a C++ map). Both are built in this same
# compile, from the same source as the bindings' libraries, and installed beside them (llama_cpp/bin, finding
# llama_cpp/lib). Only these two of llama.cpp's tools: LLAMA_BUILD_TOOLS would add all of them, with install rules
# for some. Their libraries are linked by name, so the targets may come later in llama.cpp's CMakeLists; the
# install rules wait until its end, when `llama-common` exists (CMake allows no subdirectory there).
set(PHI_FORGE_TOOLS llama-imatrix llama-quantize)
add_subdirectory(tools/imatrix)
add_subdirectory(tools/quantize)
function(phi_forge_install_tools)
    set_target_properties(${PHI_FORGE_TOOLS} PROPERTIES INSTALL_RPATH "$ORIGIN/../lib" BUILD_WITH_INSTALL_RPATH TRUE)
    set_target_properties(llama-common llama-quantize-impl PROPERTIES
        INSTALL_RPATH "$ORIGIN" BUILD_WITH_INSTALL_RPATH TRUE)
    install(TARGETS ${PHI_FORGE_TOOLS} RUNTIME DESTINATION ${SKBUILD_PLATLIB_DIR}/llama_cpp/bin)
    install(TARGETS llama-common llama-quantize-impl LIBRARY DESTINATION ${SKBUILD_PLATLIB_DIR}/llama_cpp/lib)
endfunction()
cmake_language(DEFER CALL phi_forge_install_tools)
