"""TensorRT engine files (serialized plans, `model.sm<NN>.engine`): built ahead of time by `xpr export`
(`build`: TensorRT-RTX on any machine, TensorRT 11 on a GPU) and checked before a runner deserialises
one (`checks`). Nothing here runs an engine: that is `runners.trt.TrtRunner` in Python and the C++
runtime in `engines/`."""
