"""The tests start servers with the same launcher the benchmarks use.

Functional tests check answers, not admission: on a loaded 2-core CI machine a burst of a
few dozen images can out-wait the default 2 s latency budget and be shed with 503. So a
server started here gets a 10 s budget unless the test sets its own
(`tests/test_overload.py` keeps a tight one to test admission control itself).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from loadtests.server import REPO, Server, free_port, stop
from loadtests.server import serve as _serve

FUNCTIONAL_LATENCY_BUDGET_MS = "10000"


@contextmanager
def serve(root: Path, env: dict[str, str] | None = None, **kwargs):
    """`loadtests.server.serve` with the functional-test latency budget as default."""
    env = {"SLOTSERVE_MAX_LATENCY_MS": FUNCTIONAL_LATENCY_BUDGET_MS, **(env or {})}
    with _serve(root, env=env, **kwargs) as server:
        yield server


__all__ = ["REPO", "Server", "free_port", "serve", "stop"]
