"""A bounded load test against a served model: N client threads x M requests each, over HTTP or
gRPC on loopback; every answer is checked against the expected (single-request) P(malignant).

Used by tests/test_serve.py and bench/serve_load.py (which records the numbers in bench/results/).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np


def client(protocol: str, url: str, timeout: float = 30.0) -> Any:
    """A tritonclient for `protocol` (http | grpc) with every wait bounded by `timeout` seconds."""
    if protocol == "http":
        import tritonclient.http as httpclient

        return httpclient.InferenceServerClient(url, connection_timeout=timeout, network_timeout=timeout)
    import tritonclient.grpc as grpcclient

    return grpcclient.InferenceServerClient(url)


def infer(
    c: Any, protocol: str, model: str, feeds: dict[str, np.ndarray], outputs: Sequence[str] = ("prob",),
    timeout: float = 30.0,
) -> dict[str, np.ndarray]:  # fmt: skip
    """One request: named float arrays in, the named outputs back as numpy."""
    if protocol == "http":
        import tritonclient.http as mod
    else:
        import tritonclient.grpc as mod  # type: ignore[no-redef]
    dtypes = {np.dtype(np.float32): "FP32", np.dtype(np.float64): "FP64", np.dtype(np.float16): "FP16"}
    ins = []
    for name, a in feeds.items():
        i = mod.InferInput(name, list(a.shape), dtypes.get(a.dtype, "FP32"))
        i.set_data_from_numpy(a)
        ins.append(i)
    outs = [mod.InferRequestedOutput(o) for o in outputs]
    kw = {"client_timeout": timeout} if protocol == "grpc" else {}
    r = c.infer(model, ins, outputs=outs, **kw)
    return {o: r.as_numpy(o) for o in outputs}


def run_load(
    protocol: str,
    url: str,
    model: str,
    feeds: Sequence[dict[str, np.ndarray]],
    expected: Sequence[float],
    *,
    clients: int = 8,
    requests: int = 25,
    timeout: float = 30.0,
    atol: float = 1e-6,
) -> dict[str, Any]:
    """`clients` threads, each sending `requests` requests in turn (request j of client i sends feed
    (i * requests + j) % len(feeds)); latency per request, failures, answers that differ from
    `expected` by more than `atol`."""
    lat: list[float] = []
    errors: list[str] = []
    mismatches: list[str] = []
    max_diff = [0.0]
    lock = threading.Lock()
    start = threading.Barrier(clients)

    def work(i: int) -> None:
        try:
            c = client(protocol, url, timeout)
        except Exception as exc:
            with lock:
                errors.extend([f"client {i}: {exc}"] * requests)
            return
        start.wait(timeout)
        for j in range(requests):
            k = (i * requests + j) % len(feeds)
            t0 = time.perf_counter()
            try:
                p = float(np.asarray(infer(c, protocol, model, feeds[k], timeout=timeout)["prob"]).reshape(-1)[0])
            except Exception as exc:
                with lock:
                    errors.append(f"client {i} request {j}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
                continue
            dt = time.perf_counter() - t0
            d = abs(p - float(expected[k]))
            with lock:
                lat.append(dt)
                max_diff[0] = max(max_diff[0], d)
                if d > atol:
                    mismatches.append(f"client {i} request {j}: {p} != {expected[k]}")
        try:
            c.close()
        except Exception:
            pass

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout * (requests + 2))
    wall = time.perf_counter() - t0
    hung = sum(t.is_alive() for t in threads)
    ms = np.asarray(lat) * 1e3
    return {
        "protocol": protocol, "model": model, "clients": clients, "requests_per_client": requests,
        "requests": clients * requests, "succeeded": len(lat), "failed": clients * requests - len(lat),
        "hung_clients": hung, "mismatches": len(mismatches), "max_abs_diff": max_diff[0],
        "wall_s": round(wall, 3), "throughput_rps": round(len(lat) / wall, 2) if wall > 0 else None,
        "latency_ms": {
            "p50": round(float(np.percentile(ms, 50)), 2) if len(ms) else None,
            "p99": round(float(np.percentile(ms, 99)), 2) if len(ms) else None,
            "mean": round(float(ms.mean()), 2) if len(ms) else None,
            "max": round(float(ms.max()), 2) if len(ms) else None,
        },
        "errors": errors[:5], "mismatch_examples": mismatches[:5],
    }  # fmt: skip
