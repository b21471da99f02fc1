"""The model room: the streaming-model contract (`contract`), the ONNX Runtime session (`session`) and the
shipped model (`default.onnx`, with its evaluation JSON). Importing it loads neither onnx nor onnxruntime."""
