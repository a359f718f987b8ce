"""`xpr listen`: a DICOM node a PACS or a modality sends mammography studies to (pynetdicom).

Storage SCP (+ Verification) with an allow-list of callers -> a spool written atomically
(`spool.py`) -> a persistent SQLite queue whose studies go received -> complete (quiet period) ->
predicted -> sent (`queue.py`) -> the SR and heatmap Segmentations sent back by C-STORE and/or
STOW-RS, retried with backoff (`sender.py`); `/health` and `/metrics` over HTTP (`health.py`);
`service.py` ties them together. See README "xpr listen" for the exactly-once argument.
"""

from __future__ import annotations

from .peer import Caller, Peer, parse_caller, parse_peer
from .service import Node, NodeError, NodeOptions

__all__ = ["Caller", "Node", "NodeError", "NodeOptions", "Peer", "parse_caller", "parse_peer"]
