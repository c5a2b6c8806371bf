"""The tests start servers with the same launcher the benchmarks use."""

from loadtests.server import REPO, Server, free_port, serve, stop

__all__ = ["REPO", "Server", "free_port", "serve", "stop"]
