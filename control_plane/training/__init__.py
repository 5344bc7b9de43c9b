"""Model training: fit, convert to ONNX, check parity and package a version."""
