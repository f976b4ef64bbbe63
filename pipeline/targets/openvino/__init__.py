"""OpenVINO IR for openvino-genai."""
