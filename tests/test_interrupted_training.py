"""Interrupted training: SIGKILL mid-run, then resume from the last checkpoint, losing at most
one checkpoint interval and none of the CSV log; checkpoint writes are atomic, so a kill
during a write leaves the previous complete checkpoint."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.serving import REPO
from tests.test_training import _small_model_overrides
from training.checkpoint import load_checkpoint
from training.resume import HISTORY, AtomicCheckpointIO, keep_log_history, restore_log_history

INTERVAL = 10
RUN = [
    "data.train_scenes=256",
    "data.val_scenes=8",
    "data.batch_size=8",
    "run.max_minutes=null",
    "run.eval_scenes=8",
    "run.val_every=1000",
    "run.image_every=1000",
    f"run.checkpoint_every={INTERVAL}",
    "run.log_every=5",
    "run.threads=1",
]


def _train_cmd(out, max_steps: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "training",
        "train",
        "--config",
        "default",
        "--no-progress",
        *_small_model_overrides(),
        *RUN,
        f"run.max_steps={max_steps}",
        f"run.out_dir={out}",
    ]


def _step(path) -> int:
    return torch.load(path, map_location="cpu", weights_only=True)["global_step"]


@pytest.mark.slow
def test_sigkill_then_resume_loses_at_most_one_interval(tmp_path):
    out = tmp_path / "run"
    last = out / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen(
        _train_cmd(out, 100_000), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 300
        seen: list[float] = []
        while len(seen) < 3:  # let it write a few checkpoints, then kill between two writes
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "no checkpoints appeared"
            if last.exists() and (not seen or last.stat().st_mtime != seen[-1]):
                seen.append(last.stat().st_mtime)
            time.sleep(0.05)
        time.sleep(0.3)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    killed_at_checkpoint = _step(last)  # loads: the latest checkpoint is complete
    assert killed_at_checkpoint >= 2 * INTERVAL and killed_at_checkpoint % INTERVAL == 0
    load_checkpoint(out / "model.safetensors")  # the model artefact is complete too

    target = killed_at_checkpoint + 2 * INTERVAL
    res = subprocess.run(
        _train_cmd(out, target), cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"resuming from {last}" in res.stderr
    assert _step(last) == target
    # The log holds the whole run: the killed run's rows up to its checkpoint, then the
    # resumed run's from there (the rows the kill cost are logged once, by the resumed run).
    with (out / "logs" / "metrics.csv").open() as f:
        steps = [int(row["step"]) for row in csv.DictReader(f) if row["step"]]
    assert steps == sorted(steps), "rows the resumed run trained again were kept twice"
    assert min(steps) < INTERVAL, "the log lost the steps before the resume"
    after = [s for s in steps if s >= killed_at_checkpoint]
    assert killed_at_checkpoint <= min(after) <= killed_at_checkpoint + 5, steps
    assert max(steps) >= target - 5, steps
    assert not (out / "logs" / HISTORY).exists()


def test_a_crash_during_a_checkpoint_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 10, "w": torch.ones(3)}, path)

    def dies_halfway(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial bytes of a checkpoint")
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"global_step": 20, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    state = io.load_checkpoint(path)
    assert state["global_step"] == 10 and torch.equal(state["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


class NotATensor:
    """Stands for any object a checkpoint should not be able to smuggle in."""


def test_resume_checkpoints_load_without_arbitrary_pickle(tmp_path):
    io = AtomicCheckpointIO()
    io.save_checkpoint({"evil": NotATensor()}, tmp_path / "x.ckpt")
    with pytest.raises(Exception, match=r"(?i)weights_only|unsupported|global"):
        io.load_checkpoint(tmp_path / "x.ckpt")


def test_log_history_survives_two_resumes_and_new_columns(tmp_path):
    """Killed twice before a run ends: each resume folds the rows before its checkpoint into
    the history, drops the ones it trains again, and a column new in a later run is kept."""
    logs = tmp_path

    def write(rows, header="step,loss"):
        (logs / "metrics.csv").write_text(header + "\n" + "\n".join(rows) + "\n")

    write(["5,1.0", "10,0.9", "15,0.8"])  # first run, checkpoint at 10, killed at 15
    keep_log_history(logs, 10)
    write(["10,0.85", "15,0.7", "20,0.6", "25,0.5"])  # resumed, checkpoint 20, killed at 25
    keep_log_history(logs, 20)
    write(["20,0.55,0.3", "25,0.45,"], header="step,loss,val")  # resumed again, finishes
    restore_log_history(logs)
    with (logs / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["step"], r["loss"]) for r in rows] == [
        ("5", "1.0"),
        ("10", "0.85"),
        ("15", "0.7"),
        ("20", "0.55"),
        ("25", "0.45"),
    ]
    assert [r["val"] for r in rows] == ["", "", "", "0.3", ""]
    assert not (logs / HISTORY).exists()


@pytest.mark.slow
def test_a_moved_run_directory_resumes_into_its_own_last_checkpoint(tmp_path):
    """Lightning remembers the absolute path of last.ckpt; after the folder moves, a resume
    used to write last-v1.ckpt beside it, and the resume after that restarted from the stale
    last.ckpt. The run must keep one last.ckpt that advances."""
    first, moved = tmp_path / "first", tmp_path / "moved"
    res = subprocess.run(
        _train_cmd(first, INTERVAL), cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, res.stderr[-3000:]
    shutil.move(first, moved)
    for target in (2 * INTERVAL, 3 * INTERVAL):
        res = subprocess.run(
            _train_cmd(moved, target), cwd=REPO, capture_output=True, text=True, timeout=600
        )
        assert res.returncode == 0, res.stderr[-3000:]
        assert sorted(p.name for p in (moved / "checkpoints").iterdir()) == ["last.ckpt"]
        assert _step(moved / "checkpoints" / "last.ckpt") == target


def _weights(run) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(run / "model.safetensors")


@pytest.mark.slow
def test_a_resumed_run_continues_exactly_where_it_stopped(tmp_path):
    """Stopping mid-epoch and resuming trains the same model as one uninterrupted run: the
    resume checkpoint carries the data loader's position in the epoch's shuffle and the RNG
    stream, so the resumed steps see the same batches and the same random pixel subsets."""
    whole, halves = tmp_path / "whole", tmp_path / "halves"
    for out, targets in ((whole, [3 * INTERVAL]), (halves, [INTERVAL, 3 * INTERVAL])):
        for target in targets:  # 256 scenes / batch 8 = 32 steps per epoch: stops mid-epoch
            res = subprocess.run(
                _train_cmd(out, target), cwd=REPO, capture_output=True, text=True, timeout=600
            )
            assert res.returncode == 0, res.stderr[-3000:]
    assert "not resumable" not in res.stderr
    a, b = _weights(whole), _weights(halves)
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"the resumed run trained another model ({len(differ)} tensors differ)"
