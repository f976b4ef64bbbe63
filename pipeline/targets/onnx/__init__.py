"""ONNX for onnxruntime-genai."""
