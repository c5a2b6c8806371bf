"""Data-parallel training on CPU (Lightning DDP, gloo): two processes on this machine run the
same command a multi-node launch runs on each node (docs/distributed.md). The replicas keep
one EMA codebook, only rank 0 writes the run folder, and a killed run resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.distributed as dist

from tests.serving import REPO
from tests.test_interrupted_training import _step
from tests.test_training import _small_model_overrides
from training.config import CodebookConfig
from training.model.codebook import EMACodebook

STEPS, INTERVAL = 30, 5
# The command of docs/distributed.md on one machine (tiny model and data, so it fits in
# about a minute on two cores).
DDP_RUN = [
    "run.accelerator=cpu",
    "run.devices=2",
    "run.threads=1",
    "data.train_scenes=128",
    "data.val_scenes=8",
    "data.batch_size=8",
    "run.eval_scenes=8",
    "run.val_every=1000",
    "run.image_every=1000",
    f"run.checkpoint_every={INTERVAL}",
    "run.log_every=5",
    f"run.max_steps={STEPS}",
]


def _codebook_replica(rank: int, world: int, init_file: str, out: str) -> None:
    """One replica: the same starting buffers, a batch stream of its own, four EMA steps."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        book = EMACodebook(CodebookConfig(size=8, kmeans_iters=3), 16).train()
        data = torch.Generator().manual_seed(100 + rank)
        for _ in range(4):
            book(torch.randn(4, 5, 16, generator=data) + rank)
        torch.save(book.state_dict(), f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_codebook_replicas_start_and_stay_identical_on_different_batches(tmp_path):
    """Two gloo processes, each with its own batches: k-means starts from rank 0's centroids
    and the EMA statistics are summed over both, so the codebooks are equal afterwards, and
    not equal to what rank 0's batches alone would give."""
    torch.multiprocessing.spawn(
        _codebook_replica, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2
    )
    a, b = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for key in ("embed", "embed_avg", "cluster_size"):
        assert torch.equal(a[key], b[key]), key
    torch.manual_seed(0)
    alone = EMACodebook(CodebookConfig(size=8, kmeans_iters=3), 16).train()
    data = torch.Generator().manual_seed(100)
    for _ in range(4):
        alone(torch.randn(4, 5, 16, generator=data))
    assert not torch.allclose(alone.cluster_size, a["cluster_size"]), "statistics not pooled"


def _train_cmd(out) -> list[str]:
    return [sys.executable, "-m", "training", "train", "--config", "default", "--no-progress",
            *_small_model_overrides(), *DDP_RUN, f"run.out_dir={out}"]  # fmt: skip


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_trains_resumes_after_a_kill_and_keeps_one_codebook(tmp_path):
    out = tmp_path / "run"
    last = out / "checkpoints" / "last.ckpt"
    # its own process group, so the kill takes both ranks as a node failure would
    proc = subprocess.Popen(
        _train_cmd(out), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not last.exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    killed_at = _step(last)
    assert 0 < killed_at < STEPS, killed_at
    assert not (out / "model.safetensors").exists() or killed_at >= INTERVAL

    res = subprocess.run(_train_cmd(out), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    err = res.stderr
    assert "Starting with 2 processes" in err or "MEMBER: 2/2" in err, err[-3000:]
    assert f"resuming from {last}" in err
    assert err.count("resuming from") == 1, "a rank other than 0 wrote the run folder"
    assert "codebook identical on all 2 replicas" in err
    assert _step(last) == STEPS
    # one JSON result line: rank 0 reports for the run
    assert res.stdout.count('"checkpoint"') == 1, res.stdout
    from training.checkpoint import read_info

    assert read_info(out / "model.safetensors").extra["steps"] == STEPS
