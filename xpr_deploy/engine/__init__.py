"""Engines: build (TensorRT-RTX ahead of time on any machine, TensorRT 11 on a GPU) and load/run."""
