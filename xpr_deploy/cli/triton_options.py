"""The options of the Triton model repository, declared once: `xpr triton` writes it, `xpr serve` writes
and serves it, and each option means the same in both."""

from __future__ import annotations

from typing import Annotated

import typer

MaxBatch = Annotated[int | None, typer.Option("--max-batch", help="max_batch_size; only for a dynamic-batch export")]
Instances = Annotated[int, typer.Option("--instances", help="model instances per device")]
PythonBackend = Annotated[
    str, typer.Option("--python-backend", help="python model runs: onnx | engine | onnx-int8 (a registered backend)")
]
Kind = Annotated[str, typer.Option("--kind", help="python model instance_group kind: cpu | gpu | auto")]
DynamicBatching = Annotated[
    bool, typer.Option("--dynamic-batching/--no-dynamic-batching", help="Triton's dynamic batcher (dynamic bundles)")
]
QueueDelayUs = Annotated[int, typer.Option("--queue-delay-us", help="dynamic batcher's max queue delay")]
Threads = Annotated[int | None, typer.Option("--threads", help="ONNX Runtime threads per python instance")]
OperatingPoint = Annotated[
    str | None, typer.Option("--operating-point", help="the xpr_threshold parameter's point (default: bundle's)")
]
