"""Training pipeline: every shipped config trains, checkpoints round-trip without pickle,
runs resume, and the CLI evaluates checkpoints and baselines."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import SMALL, run_module, small_checkpoint
from training.checkpoint import CheckpointInfo, load_checkpoint, read_info, save_checkpoint
from training.config import CONFIG_DIR, load_train_config
from training.data import SHAPE_CLASSES
from training.model import build_model
from training.train import train

TINY_RUN = [
    "data.train_scenes=64",
    "data.val_scenes=8",
    "data.batch_size=8",
    "run.max_steps=2",
    "run.max_minutes=null",
    "run.eval_scenes=8",
    "run.val_every=2",
    "run.image_every=1",
    "run.checkpoint_every=1",
    "run.log_every=1",
]


def _yaml(value) -> str:
    return "null" if value is None else str(value)


def _small_model_overrides() -> list[str]:
    out = []
    for section, values in SMALL.items():
        if isinstance(values, dict):
            out += [f"model.{section}.{k}={_yaml(v)}" for k, v in values.items()]
        else:
            out.append(f"model.{section}={_yaml(values)}")
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
def test_every_config_trains(name, tmp_path):
    """Each shipped config, unchanged but for size and budget, trains and writes its artefacts."""
    extra = []
    if name == "folder":
        folder = tmp_path / "images"
        folder.mkdir()
        rng = np.random.default_rng(0)
        for i in range(10):
            Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(
                folder / f"{i}.png"
            )
        extra.append(f"data.folder={folder}")
    if name == "photos":  # its frozen Lite0 at a small input keeps the run short
        extra += ["model.encoder.lite0_input=64", "model.encoder.eval_input=96"]
        extra += ["data.train_scenes=8", "data.batch_size=4"]
    cfg = load_train_config(
        name, [*_small_model_overrides(), *TINY_RUN, f"run.out_dir={tmp_path / 'run'}", *extra]
    )
    path = train(cfg, progress=False)
    out = path.parent
    for artefact in (
        "config.yaml",
        "model.safetensors",
        "metrics.json",
        "checkpoints/last.ckpt",
        "curves.png",
    ):
        assert (out / artefact).exists(), artefact
    assert list((out / "images").glob("masks_*.png")) and list((out / "images").glob("codes_*.png"))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 2
    judged = "photos" if name == "photos" else "solid"  # the labelled scenes of the recipe
    assert set(metrics) >= {judged, "steps"}
    assert 0.0 <= metrics[judged]["fg_ari"] <= 1.0 or np.isnan(metrics[judged]["fg_ari"])
    _, info = load_checkpoint(path)
    assert info.config == cfg.model
    assert len(info.code_names) == cfg.model.codebook.size
    assert abs(sum(info.code_usage) - 1.0) < 1e-3
    # the served labels, fitted by the true rule on the recipe's labelled set, travel with it
    assert info.label_set == ("photos" if name == "photos" else "shapes")
    assert len(info.code_labels) == cfg.model.codebook.size


def test_init_from_starts_from_a_checkpoints_weights(tmp_path):
    from training.train import SlotModule, _init_from

    cfg = load_train_config("default", [*_small_model_overrides(), *TINY_RUN])
    source = SlotModule(cfg).model
    ckpt = save_checkpoint(source, tmp_path / "src.safetensors", CheckpointInfo(cfg.model))
    module = SlotModule(cfg)
    key = next(iter(source.state_dict()))
    assert not torch.equal(module.model.state_dict()[key], source.state_dict()[key])
    _init_from(module, cfg, str(ckpt))
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in module.model.state_dict().items())
    other = load_train_config(
        "default", [*_small_model_overrides(), "model.slot_attention.num_slots=3"]
    )
    with pytest.raises(ValueError, match="model config differs"):
        _init_from(SlotModule(other), other, str(ckpt))


@pytest.mark.parametrize(
    ("cuda", "amx", "expected"),
    [
        (False, True, "bf16-mixed"),
        (False, False, "32-true"),
        (False, None, "32-true"),
        (True, True, "32-true"),
    ],
)
def test_precision_auto_is_bf16_only_on_a_cpu_with_amx(monkeypatch, cuda, amx, expected):
    """bf16 autocast trained 1.57x faster on a CPU with AMX and 11.8x slower on an AVX2 one."""
    from training.train import resolve_precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    if amx is None:  # a torch without the probe
        monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    else:
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    assert resolve_precision("auto") == expected
    assert resolve_precision("32-true") == "32-true"  # an explicit choice is kept
    assert resolve_precision("bf16-mixed") == "bf16-mixed"


def test_precision_auto_run_saves_what_it_ran(monkeypatch, tmp_path):
    import yaml

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    out = tmp_path / "run"
    overrides = [*_small_model_overrides(), *TINY_RUN, f"run.out_dir={out}", "run.precision=auto"]
    train(load_train_config("default", overrides), progress=False)
    assert yaml.safe_load((out / "config.yaml").read_text())["run"]["precision"] == "32-true"


@pytest.mark.slow
def test_resume_continues_from_last_checkpoint(tmp_path):
    base = [*_small_model_overrides(), *TINY_RUN, f"run.out_dir={tmp_path}"]
    train(load_train_config("default", base), progress=False)
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 2
    train(load_train_config("default", [*base, "run.max_steps=4"]), progress=False)
    assert json.loads((tmp_path / "metrics.json").read_text())["steps"] == 4
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 4


def test_checkpoint_round_trip_without_pickle(small_cfg, tmp_path):
    torch.manual_seed(0)
    model = build_model(small_cfg)
    model(torch.rand(4, 3, 32, 32))  # initialise the codebook
    model.eval()
    names = ["background", "circle", *[None] * 6]
    path = save_checkpoint(
        model, tmp_path / "m.safetensors", CheckpointInfo(small_cfg, names, [0.5, 0.5] + [0] * 6)
    )
    # safetensors: a JSON header and raw tensors, never a pickle stream
    assert path.read_bytes()[:1] != b"\x80"
    restored, info = load_checkpoint(path)
    assert info.config == small_cfg and info.code_names == names
    assert info.code_labels is None and info.label_set is None
    labelled = CheckpointInfo(small_cfg, code_labels=_labels("circle", None), label_set="shapes")
    save_checkpoint(model, tmp_path / "l.safetensors", labelled)
    again = read_info(tmp_path / "l.safetensors")
    assert again.code_labels == labelled.code_labels and again.label_set == "shapes"
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        a, b = model(x), restored(x)
    assert torch.equal(a.masks, b.masks) and torch.equal(a.codes, b.codes)
    assert not list(tmp_path.glob(".m.safetensors.*")), "temporary file left behind"


def test_read_info_rejects_foreign_files(tmp_path):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="not a SlotServe checkpoint"):
        read_info(tmp_path / "other.safetensors")


def _cli(*args: str):
    return run_module("training", *args)


@pytest.mark.slow
def test_cli_evaluates_checkpoint_baselines_and_coco(small_cfg, tmp_path):
    from training.data import generate_batch, write_coco

    path = small_checkpoint(tmp_path / "m.safetensors", small_cfg)
    res = _cli(
        "evaluate", "--checkpoint", str(path), "--variant", "textured", "--scenes", "16", "--json"
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    for key in (
        "fg_ari",
        "mbo",
        "miou",
        "code_perplexity",
        "code_usage",
        "code_class_nmi",
        "code_class_purity",
    ):
        assert key in out
    assert out["scenes"] == 16 and out["method"] == "model"
    assert out["iterations"] == small_cfg.slot_attention.iterations

    # more refinements at inference: another grouping of the same scenes, reported as such
    res = _cli("evaluate", "--checkpoint", str(path), "--variant", "textured", "--scenes", "16",
               "--iterations", "4", "--json")  # fmt: skip
    assert res.returncode == 0, res.stderr
    more = json.loads(res.stdout)
    assert more["iterations"] == 4 and more["code_usage"] != out["code_usage"]
    res = _cli("evaluate", "--checkpoint", str(path), "--iterations", "0", "--json")
    assert res.returncode != 0 and "--iterations: must be a whole number >= 1" in res.stderr

    res = _cli("evaluate", "--method", "colour", "--variant", "solid", "--scenes", "16", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["fg_ari"] > 0.95  # exact colour solves flat-colour scenes

    coco_dir = tmp_path / "coco"
    write_coco(generate_batch(6, 5, "solid", 32), coco_dir)
    res = _cli("evaluate", "--method", "colour", "--coco", str(coco_dir), "--size", "32", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["scenes"] == 6 and out["fg_ari"] > 0.95

    res = _cli("evaluate", "--checkpoint", str(tmp_path / "missing.safetensors"), "--json")
    assert res.returncode != 0 and "error" in res.stderr.lower()


def _labels(*names):
    from training.labels import CodeLabel

    return [CodeLabel(n, 1.0, n, 0.0, 1.0, 50) for n in names]


@pytest.mark.slow
def test_evaluate_judges_a_checkpoints_served_labels_not_its_majority_names(small_cfg, tmp_path):
    """The labels block of `evaluate --checkpoint` is what the checkpoint would serve: its
    fitted code labels, never its majority names (which call codes "background")."""
    model = build_model(small_cfg)
    model(torch.rand(4, 3, 32, 32))
    e = small_cfg.codebook.size
    info = CheckpointInfo(
        small_cfg, code_names=["background"] * e, code_labels=_labels(*["circle"] * e),
        label_set="shapes",
    )  # fmt: skip
    path = save_checkpoint(model.eval(), tmp_path / "m.safetensors", info)
    args = ("evaluate", "--checkpoint", str(path), "--variant", "solid", "--scenes", "16")
    res = _cli(*args, "--json")
    assert res.returncode == 0, res.stderr
    labels = json.loads(res.stdout)["labels"]
    assert labels["objects"] > 0 and labels["objects_labelled_background"] == 0.0
    assert "fitting the checkpoint's code labels" not in res.stderr

    # without stored labels they are fitted by the served rule, not taken from the names
    info.code_labels = info.label_set = None
    save_checkpoint(model.eval(), path, info)
    res = _cli(*args, "--label-scenes", "8", "--json")
    assert res.returncode == 0, res.stderr
    assert "fitting the checkpoint's code labels on shapes scenes" in res.stderr
    assert json.loads(res.stdout)["labels"]["objects_labelled_background"] < 1.0


def test_checkpoint_labels_are_refitted_for_another_label_set(small_cfg, monkeypatch):
    from training import evaluate

    fitted = []
    monkeypatch.setattr(
        evaluate,
        "label_model_codes",
        lambda predict, k, e, label_set, size, scenes: (
            fitted.append(label_set)
            or (None if label_set == "none" else (_labels(*["mammals"] * e), None))
        ),
    )
    model = build_model(small_cfg).eval()
    stored = CheckpointInfo(small_cfg, code_labels=_labels("circle"), label_set="shapes")
    assert evaluate.checkpoint_labels(model, stored, "shapes") == _labels("circle")
    assert fitted == []
    labels = evaluate.checkpoint_labels(model, stored, "photos", scenes=4)
    assert fitted == ["photos"] and {c.label for c in labels} == {"mammals"}
    evaluate.checkpoint_labels(model, stored, "shapes", scenes=4, refit=True)
    assert fitted == ["photos", "shapes"]
    assert evaluate.checkpoint_labels(model, CheckpointInfo(small_cfg), "none") is None


def test_recommend_codebook_size_rule():
    from training.sweep import recommend

    rows = [
        {"codebook_size": 8, "code_perplexity": 6.0, "code_usage": 0.9},
        {"codebook_size": 16, "code_perplexity": 11.5, "code_usage": 0.8},
        {"codebook_size": 32, "code_perplexity": 12.0, "code_usage": 0.45},
        {"codebook_size": 64, "code_perplexity": 12.2, "code_usage": 0.2},
    ]
    # 16 reaches 90% of the best perplexity (12.2) and uses most of its codes
    assert recommend(rows) == 16


@pytest.mark.slow
def test_codebook_sweep_reports_each_size(tmp_path):
    from training.sweep import sweep_codebook

    report = sweep_codebook("default", [4, 8], tmp_path, [*_small_model_overrides(), *TINY_RUN])
    assert [r["codebook_size"] for r in report["sizes"]] == [4, 8]
    for row in report["sizes"]:
        assert 1.0 <= row["code_perplexity"] <= row["codebook_size"]
        assert 0.0 < row["code_usage"] <= 1.0
    assert report["recommended"] in (4, 8)
    assert json.loads((tmp_path / "sweep.json").read_text()) == report


@pytest.mark.slow
def test_demo_name_codes_and_bench_cli(small_cfg, tmp_path):
    path = small_checkpoint(tmp_path / "m.safetensors", small_cfg)
    res = _cli("name-codes", "--checkpoint", str(path), "--scenes", "8")
    assert res.returncode == 0, res.stderr
    info = read_info(path)
    assert info.code_names is not None and any(n is not None for n in info.code_names)
    assert info.label_set == "shapes" and len(info.code_labels) == small_cfg.codebook.size
    printed = json.loads(res.stdout)
    assert set(printed["majority_names"].values()) <= {"background", *SHAPE_CLASSES}
    assert printed["served_labels"] == {
        str(e): c.label for e, c in enumerate(info.code_labels) if c.label is not None
    }

    res = _cli("demo", "--checkpoint", str(path), "--out", str(tmp_path / "demo"), "--scenes", "8")
    assert res.returncode == 0, res.stderr
    assert "| textured | kmeans |" in res.stdout
    assert (tmp_path / "demo" / "masks_textured.png").stat().st_size > 1000

    small = _small_model_overrides()
    res = _cli("bench-step", "--steps", "2", *small, "data.batch_size=2")
    assert res.returncode == 0, res.stderr
    bench = json.loads(res.stdout)
    assert bench["fp32_step_ms"] > 0 and bench["bf16_step_ms"] > 0
    assert bench["device"] == "cpu"

    res = _cli("bench-step", "--device", "cuda", "--steps", "2", *small, "data.batch_size=2")
    if torch.cuda.is_available():  # the GPU branch ran on an H100 (README, "GPU")
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)["device"] == torch.cuda.get_device_name()
    else:
        assert res.returncode == 2 and res.stdout == ""
        assert res.stderr.strip().splitlines()[-1] == (
            "error: --device cuda: torch sees no CUDA GPU here"
        )


def _image_folder(path, n: int):
    path.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(path / f"{i}.png")
    return path


@pytest.mark.slow
def test_cli_train_prints_one_progress_bar_and_each_log_line_once(tmp_path):
    """A small folder (two steps an epoch): one bar counts the run's steps instead of one bar
    per epoch, and no INFO line comes out twice (Lightning's own handler and the root's)."""
    import re

    folder = _image_folder(tmp_path / "images", 8)
    res = run_module(
        "training", "train", "--config", "folder", *_small_model_overrides(), *TINY_RUN,
        "data.batch_size=4", "run.max_steps=6", "run.image_every=100", "run.val_every=100",
        f"data.folder={folder}", f"run.out_dir={tmp_path / 'run'}",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    err = (res.stdout + res.stderr).replace("\r", "\n")
    bars = [line for line in err.splitlines() if "it/s" in line]
    assert bars and all(line.startswith("Training") for line in bars), set(bars)
    assert any("6/6" in line for line in bars)
    messages = re.findall(r"INFO[^:\n]*: (.*)", err)
    assert "`Trainer.fit` stopped: `max_steps=6` reached." in messages
    assert len(messages) == len(set(messages)), messages


@pytest.mark.slow
def test_a_folder_smaller_than_a_batch_is_refused_and_writes_no_model(tmp_path):
    """7 images and batch 16 trained 0 steps, exited 0 and wrote an untrained
    model.safetensors; now the CLI refuses the folder in one line, exits non-zero and writes
    no model."""
    folder = _image_folder(tmp_path / "images", 7)
    out = tmp_path / "run"
    res = run_module(
        "training", "train", "--config", "folder", "--no-progress", *_small_model_overrides(),
        *TINY_RUN, "data.batch_size=16", f"data.folder={folder}", f"run.out_dir={out}",
    )  # fmt: skip
    assert res.returncode == 2, res.stderr[-2000:]
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("error: data.folder") and "has 7 images" in last, last
    assert "data.batch_size=16" in last and "data.batch_size=7 or lower" in last
    assert not (out / "model.safetensors").exists()


@pytest.mark.slow
def test_a_run_of_zero_steps_writes_no_model(tmp_path, monkeypatch):
    """Whatever stops a run before its first step (here the size check is switched off, so
    the 7-image folder gives an empty loader), no untrained model is written."""
    import training.train as training_train

    monkeypatch.setattr(training_train, "check_one_batch", lambda *a, **k: None)
    folder = _image_folder(tmp_path / "images", 7)
    cfg = load_train_config(
        "folder",
        [*_small_model_overrides(), *TINY_RUN, "data.batch_size=16", f"data.folder={folder}",
         f"run.out_dir={tmp_path / 'run'}"],
    )  # fmt: skip
    with pytest.raises(training_train.NothingTrained, match="0 training steps"):
        train(cfg, progress=False)
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_a_warm_restart_starts_the_learning_rate_schedule_again():
    from training.train import SlotModule

    cfg = load_train_config(
        "default",
        [
            *_small_model_overrides(),
            "optim.lr=0.001",
            "optim.warmup_steps=10",
            "optim.decay_steps=20",
            "optim.restart_steps=50",
        ],
    )
    opts = SlotModule(cfg).configure_optimizers()
    opt, sched = opts["optimizer"], opts["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(120):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[9] == pytest.approx(1e-3)  # warmed up
    assert lrs[49] == pytest.approx(1e-3 * 0.5 ** (39 / 20))  # decayed, end of cycle 1
    assert lrs[50] == pytest.approx(lrs[0])  # warm-up again
    assert lrs[59] == pytest.approx(1e-3) and lrs[100:110] == pytest.approx(lrs[0:10])
    with pytest.raises(ValueError, match="must exceed optim"):
        load_train_config("default", ["optim.warmup_steps=100", "optim.restart_steps=100"])
