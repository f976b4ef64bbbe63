"""GGUF for llama.cpp with Ollama Modelfiles."""
