"""ONNX export: contract, parity gate, graph facts, tamper detection, torch-free contract."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from export.onnx_export import export_bundle
from runtime.contract import (
    MANIFEST_FILE,
    MODEL_FILE,
    BundleError,
    InputSpec,
    load_bundle,
    read_manifest,
    to_model_input,
)
from tests.conftest import run_module

pytestmark = pytest.mark.slow


def test_bundle_passes_parity_at_every_batch(exported):
    _, _, manifest = exported
    parity = manifest.parity
    assert set(parity["batches"]) == {"1", "3", "32"}
    for figures in parity["batches"].values():
        assert figures["max_mask_diff"] <= 1e-4
        assert figures["code_agreement"] == 1.0
        assert figures["argmax_agreement"] >= 0.999
        # distances from the float64 model (> 0: the reference really ran in double)
        assert 0 < figures["exact_mask_diff"] <= max(1e-4, figures["torch_exact_mask_diff"])
        assert 0 < figures["torch_exact_mask_diff"] < 1e-3
        # the rounding envelope really perturbed the input, and it stays a rounding figure
        assert 0 < figures["rounding_mask_diff"] < 1e-3
    assert parity["batch_symbolic"] and parity["random_ops"] == []


def _report(diff: float, exact: float, torch_exact: float, rounding: float = 0.0) -> dict:
    figures = {"max_mask_diff": diff, "exact_mask_diff": exact}
    figures["torch_exact_mask_diff"] = torch_exact
    figures["rounding_mask_diff"] = rounding
    return {
        "batches": {"1": figures},
        "min_code_agreement": 1.0,
        "batch_symbolic": True,
        "random_ops": [],
    }


def test_parity_gate_allows_float32_rounding_but_not_export_error():
    """Beyond 1e-4 from PyTorch, the bundle passes only if it is no farther from the float64
    model than PyTorch's float32 run (rounding PyTorch makes too); otherwise it fails."""
    from export.verify import parity_gate

    parity_gate(_report(5e-5, 9e-1, 0.0))  # within 1e-4 of PyTorch: passes
    parity_gate(_report(2e-4, 1e-4, 3e-4))  # closer to the exact model than PyTorch is
    with pytest.raises(RuntimeError, match="float64"):
        parity_gate(_report(2e-4, 5e-4, 3e-4))  # error of its own on top of rounding
    with pytest.raises(RuntimeError, match="code agreement"):
        parity_gate({**_report(0.0, 0.0, 0.0), "min_code_agreement": 0.99})


def test_parity_gate_measures_rounding_on_moved_inputs_too():
    """The shipped 11-slot model amplifies rounding: at batch 32 onnxruntime was 8.7e-4 from
    the float64 model and PyTorch 5.2e-4, while PyTorch on inputs moved by one float32
    epsilon landed 1.3e-3 to 1.9e-3 away. Within that envelope the bundle passes; an error
    beyond it fails."""
    from export.verify import parity_gate

    parity_gate(_report(1.4e-3, 8.7e-4, 5.2e-4, rounding=1.9e-3))
    with pytest.raises(RuntimeError, match=r"float32 rounding in PyTorch: 1\.90e-03"):
        parity_gate(_report(1e-2, 1e-2, 5.2e-4, rounding=1.9e-3))


def test_rounding_envelope_is_the_float32_spread_of_the_model(exported):
    """Moving the input by one float32 epsilon moves a float32 model's masks from the
    float64 model's by rounding only: above 0 (the input really moved) and small."""
    import copy

    import torch

    from export.graph import ExportWrapper
    from export.verify import _scenes, rounding_envelope
    from training.checkpoint import load_checkpoint

    checkpoint, _, manifest = exported
    model, _ = load_checkpoint(checkpoint)
    exact = ExportWrapper(copy.deepcopy(model).double(), manifest.mask_source)
    x = to_model_input(_scenes(4, manifest.input.height, 7), manifest.input)
    with torch.no_grad():
        e_masks = exact(torch.from_numpy(x).double())[0].numpy()
    wrapper = ExportWrapper(model, manifest.mask_source)
    envelope = rounding_envelope(wrapper, x, e_masks, seed=0)
    assert 0 < envelope < 1e-3
    assert envelope == rounding_envelope(wrapper, x, e_masks, seed=0)  # seeded


def test_parity_gate_on_a_gpu_provider_allows_its_summation_order_and_no_more():
    """A GPU provider's report carries its own tolerance (2e-3): an H100 in full fp32 came
    within 1.5e-3 of PyTorch on the CPU, which the CPU tolerance would fail."""
    from export.verify import GPU_MAX_MASK_DIFF, parity_gate

    h100 = _report(1.5e-3, 1.5e-3, 3e-4)
    with pytest.raises(RuntimeError, match="1e-04"):
        parity_gate(h100)
    parity_gate({**h100, "max_mask_tolerance": GPU_MAX_MASK_DIFF})
    with pytest.raises(RuntimeError, match="2e-03"):
        parity_gate({**_report(5e-3, 5e-3, 3e-4), "max_mask_tolerance": GPU_MAX_MASK_DIFF})


def test_graph_has_symbolic_batch_no_random_ops_and_baked_codebook(exported):
    import onnx

    from export.graph import graph_report
    from export.onnx_export import codebook_is_initializer
    from training.checkpoint import load_checkpoint

    ckpt, bundle, _ = exported
    report = graph_report(bundle / MODEL_FILE)
    assert report["batch_symbolic"], report["batch_dim"]
    assert not [op for op in report["ops"] if op.startswith("Random")]
    assert report["inputs"] == ["image"] and report["outputs"] == [
        "masks",
        "codes",
        "code_distances",
    ]
    model, _ = load_checkpoint(ckpt)
    assert codebook_is_initializer(bundle / MODEL_FILE, model.codebook.embed.numpy())
    # weights live inside the single file: no external data next to it
    assert [p.name for p in bundle.iterdir()] and not list(bundle.glob("*.data"))
    onnx.checker.check_model(str(bundle / MODEL_FILE))


def test_manifest_records_contract_hashes_and_codes(exported):
    from runtime.contract import sha256_file

    ckpt, bundle, _ = exported
    manifest = load_bundle(bundle)
    assert manifest.checkpoint_sha256 == sha256_file(ckpt)
    assert manifest.input.height == 32 and manifest.input.layout == "NCHW"
    assert manifest.num_slots == 4 and manifest.codebook_size == 8
    # written once, in the typed model section; the output shapes name the axis
    raw = json.loads((bundle / MANIFEST_FILE).read_text())
    assert "num_slots" not in raw and "codebook_size" not in raw
    assert raw["model"]["slot_attention"]["num_slots"] == 4
    assert [o["shape"][1] for o in raw["outputs"]] == ["slots"] * 3
    assert raw["input"]["mean"] == [0.0, 0.0, 0.0] and raw["input"]["std"] == [1.0, 1.0, 1.0]
    assert manifest.iterations == {"bottom_up": 2, "modulated": 2}
    assert manifest.code_names == ["background"] * 8
    assert MODEL_FILE in manifest.files and len(manifest.checkpoint_sha256) == 64
    assert {"torch", "onnx", "onnxruntime"} <= set(manifest.tools)


def test_changed_byte_fails_to_load_naming_the_file(exported, tmp_path):
    import shutil

    _, bundle, _ = exported
    copy = tmp_path / "tampered"
    shutil.copytree(bundle, copy)
    data = bytearray((copy / MODEL_FILE).read_bytes())
    data[len(data) // 2] ^= 0x01
    (copy / MODEL_FILE).write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"model\.onnx: sha256 mismatch") as err:
        load_bundle(copy)
    assert "\n" not in str(err.value)


def test_the_shipped_manifest_loads_and_repeated_counts_must_agree(tmp_path):
    """The shipped bundle's manifest predates the typed model section: it has input.scale
    only (mean 0, std 1) and repeats num_slots / codebook_size at the top level."""
    from service.settings import DEFAULT_BUNDLE

    raw = json.loads((DEFAULT_BUNDLE / MANIFEST_FILE).read_text())
    assert "mean" not in raw["input"] and raw["num_slots"] == 11
    manifest = read_manifest(DEFAULT_BUNDLE)
    assert manifest.num_slots == 11 and manifest.codebook_size == raw["codebook_size"]
    assert manifest.input.mean == (0.0, 0.0, 0.0) and manifest.input.std == (1.0, 1.0, 1.0)
    assert manifest.model.decoder.merge_share == raw["model"]["decoder"]["merge_share"]
    raw["num_slots"] = 7
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(raw))
    with pytest.raises(BundleError, match="num_slots 7 disagrees"):
        read_manifest(tmp_path)


def test_the_masks_description_names_the_path_the_masks_take():
    """A manifest says what its masks output is for the model's own settings: the photo
    bundle's masks are half slot attention and refined, not the decoder's alphas alone."""
    from export.onnx_export import masks_description
    from training.config import ModelConfig, load_train_config

    root = Path(__file__).parents[1] / "models"
    said = {}
    for name in ("slotserve-shapes", "slotserve-photos"):
        manifest = read_manifest(root / name)
        cfg = ModelConfig.model_validate(manifest.model.model_dump())
        masks = next(o for o in manifest.outputs if o.name == "masks")
        assert masks.description == masks_description(cfg, manifest.mask_source), name
        said[name] = masks.description
    assert (
        "decoder's alphas)" in said["slotserve-shapes"] and "above 0.04" in said["slotserve-shapes"]
    )
    photos = said["slotserve-photos"]
    assert "slot attention at a share of 0.5" in photos and "(radius 32)" in photos
    assert "best of 8 starts" in photos and "starts" not in said["slotserve-shapes"]
    photo_model = load_train_config("photos").model
    decoder = photo_model.decoder.model_copy(update={"mask_attention": 0.0, "refine_radius": 0})
    plain = photo_model.model_copy(update={"decoder": decoder})
    text = masks_description(plain, "decoder_alpha")
    assert "alphas on the token grid, upsampled" in text
    assert "attention" not in text and "guided" not in text
    assert "final slot attention, upsampled" in masks_description(plain, "attention")


def test_missing_file_and_future_format_are_refused(exported, tmp_path):
    import shutil

    _, bundle, _ = exported
    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    (copy / MODEL_FILE).unlink()
    with pytest.raises(BundleError, match="missing"):
        load_bundle(copy)
    raw = json.loads((bundle / MANIFEST_FILE).read_text())
    raw["format_version"] = 99
    (copy / MANIFEST_FILE).write_text(json.dumps(raw))
    with pytest.raises(BundleError, match="format 99 is not supported"):
        read_manifest(copy)


def test_verify_cli_prints_json_and_passes(exported):
    ckpt, bundle, _ = exported
    res = run_module(
        "export", "verify", "--bundle", str(bundle), "--checkpoint", str(ckpt), "--json"
    )
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["min_code_agreement"] == 1.0 and report["max_mask_diff"] <= 1e-4
    assert report["provider"] == "CPUExecutionProvider" and report["max_mask_tolerance"] == 1e-4


def test_verify_on_a_provider_this_build_lacks_is_a_one_line_error(exported):
    """`--provider cuda` must not quietly check the CPU instead (onnxruntime falls back)."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime build has CUDA (tests/test_export.py::..._on_gpu covers it)")
    ckpt, bundle, _ = exported
    args = ("export", "verify", "--bundle", str(bundle), "--checkpoint", str(ckpt))
    res = run_module(*args, "--provider", "cuda")
    assert res.returncode == 1 and res.stdout == ""
    assert res.stderr.startswith("error: provider cuda is not in this onnxruntime build")
    assert res.stderr.count("\n") == 1


@pytest.mark.gpu
def test_verify_on_cuda_passes_the_gpu_gate(exported):
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.fail("a CUDA GPU but a CPU-only onnxruntime: install the gpu extra")
    ckpt, bundle, _ = exported
    args = ("export", "verify", "--bundle", str(bundle), "--checkpoint", str(ckpt))
    res = run_module(*args, "--provider", "cuda", "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["provider"] == "CUDAExecutionProvider"
    assert report["max_mask_tolerance"] == 2e-3


def test_contract_is_torch_free():
    code = (
        "import sys, runtime.contract, export\n"
        "assert 'torch' not in sys.modules, 'runtime.contract imported torch'\n"
        "assert 'training' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


def test_to_model_input_layout_and_the_manifests_normalisation():
    images = np.zeros((2, 5, 7, 3), np.uint8)
    images[0, 1, 2] = [255, 0, 51]
    spec = InputSpec(height=5, width=7)  # a manifest with input.scale only: mean 0, std 1
    x = to_model_input(images, spec)
    assert x.shape == (2, 3, 5, 7) and x.dtype == np.float32
    assert np.array_equal(x, images.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255))
    imagenet = InputSpec(height=5, width=7, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    y = to_model_input(images, imagenet)
    expected = (np.array([1.0, 0.0, 0.2]) - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    assert np.allclose(y[0, :, 1, 2], expected, atol=1e-6)
    assert np.allclose(y[1, :, 0, 0], -np.array([0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225])
    assert np.allclose(
        to_model_input(images, InputSpec(height=5, width=7, scale=1.0))[0, 0, 1, 2], 255
    )
    with pytest.raises(ValueError):
        to_model_input(images.astype(np.float32), spec)
    with pytest.raises(ValueError, match="std"):
        InputSpec(height=5, width=7, std=(1.0, 0.0, 1.0))


def test_evaluate_through_onnxruntime_matches_checkpoint(exported):
    ckpt, bundle, _ = exported
    common = ["--variant", "textured", "--scenes", "24", "--seed", "7", "--json"]
    results = {}
    for flag, path in (("--checkpoint", ckpt), ("--bundle", bundle)):
        res = run_module("training", "evaluate", flag, str(path), *common)
        assert res.returncode == 0, res.stderr
        results[flag] = json.loads(res.stdout)
    a, b = results["--checkpoint"], results["--bundle"]
    assert abs(a["fg_ari"] - b["fg_ari"]) <= 0.005
    assert a["code_class_nmi"] == pytest.approx(b["code_class_nmi"], abs=1e-6)


def test_graph_optimisation_keeps_tiny_epsilons(tmp_path):
    """Slot attention adds 1e-8 before normalising; onnxscript's `x + 0` rule deleted it."""
    import onnxruntime as ort
    import torch

    from export.onnx_export import optimize_graph

    class WeightedMean(torch.nn.Module):
        def forward(self, attn):
            weights = attn + 1e-8
            return weights / weights.sum(dim=-1, keepdim=True)

    with torch.no_grad():
        program = torch.onnx.export(
            WeightedMean(), (torch.rand(2, 4),), dynamo=True, optimize=False, verbose=False
        )
    optimize_graph(program.model)
    path = tmp_path / "m.onnx"
    program.save(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    # An all-zero row (a slot that attends nowhere) is uniform with the epsilon, NaN without.
    x = np.zeros((2, 4), np.float32)
    x[1] = [1.0, 0.0, 0.0, 0.0]
    (out,) = session.run(None, {session.get_inputs()[0].name: x})
    assert np.allclose(out[0], 0.25) and np.allclose(out[1], [1.0, 0.0, 0.0, 0.0], atol=1e-7)


def test_export_unrolls_the_inference_iterations(tmp_path):
    """A checkpoint whose config asks for more refinements at inference exports that count,
    and so does one exported with `--iterations`; verify re-checks parity at the bundle's
    count (the parity gate also runs inside each export)."""
    from export.verify import parity_gate, verify_bundle
    from tests.conftest import small_checkpoint, small_config

    cfg = small_config(slot_attention={"iterations": 2, "eval_iterations": 3})
    ckpt = small_checkpoint(tmp_path / "m.safetensors", cfg)
    manifest = export_bundle(ckpt, tmp_path / "bundle")
    assert manifest.iterations == {"bottom_up": 3, "modulated": 3}
    assert manifest.model.slot_attention.eval_iterations == 3

    res = run_module("export", "onnx", "--checkpoint", ckpt, "--out", tmp_path / "b4",
                     "--iterations", "4", "--no-variants", "--label-scenes", "16")  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    b4 = load_bundle(tmp_path / "b4")
    assert b4.iterations == {"bottom_up": 4, "modulated": 4}
    # The export named the codes on labelled scenes: one entry per code, with its evidence.
    assert b4.label_set == "shapes" and len(b4.code_labels) == b4.codebook_size
    assert set(b4.label_thresholds) == {"background", "category"}
    assert sum(c.slots for c in b4.code_labels) > 0
    report = verify_bundle(tmp_path / "b4", ckpt)
    parity_gate(report)
    assert all(f["code_agreement"] == 1.0 for f in report["batches"].values())


@pytest.mark.parametrize(
    "on, off",
    [
        ({"slot_attention": {"key_pool": 3}}, {"slot_attention": {"key_pool": 1}}),
        ({"slot_attention": {"key_pool_mix": 0.5}}, {"slot_attention": {"key_pool_mix": 1.0}}),
        ({"modulation": {"qvf": True}}, {"modulation": {"qvf": False}}),
    ],
    ids=["key_pool", "key_pool_mix", "qvf"],
)
def test_gate_tells_a_model_option_apart(tmp_path, on, off):
    """A model option that is on exports (the parity gate inside export_bundle passes), and
    the same bundle checked against the same weights with the option off fails the gate: the
    option is in the graph, and a gate that let a graph through whatever it computes fails
    here."""
    import torch

    from export.verify import parity_gate, verify_bundle
    from tests.conftest import small_config
    from training.checkpoint import CheckpointInfo, save_checkpoint
    from training.model import build_model

    base = {
        "encoder": {"stride": 2},
        "slot_attention": {"locality": 1.0, "locality_window": 0.25, "key_pool": 3},
        "decoder": {"attention_prior": True, "slot_centric": True},
        "modulation": {},
    }

    def config(option):
        raw = {section: {**fields, **option.get(section, {})} for section, fields in base.items()}
        return small_config(**raw)

    torch.manual_seed(0)
    model = build_model(config(on))
    model(torch.rand(4, 3, 32, 32))  # k-means init + one EMA step
    with torch.no_grad():  # qvf's layers start as the constant 1: give them something to do
        for p in model.modulation.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model.eval()
    with_option = save_checkpoint(model, tmp_path / "on.safetensors", CheckpointInfo(config(on)))
    plain = build_model(config(off)).eval()
    keep = plain.state_dict().keys()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if k in keep})
    without = save_checkpoint(plain, tmp_path / "off.safetensors", CheckpointInfo(config(off)))

    export_bundle(with_option, tmp_path / "bundle")  # raises unless the gate passes
    with pytest.raises(RuntimeError, match="parity gate failed"):
        parity_gate(verify_bundle(tmp_path / "bundle", without))


def test_export_bakes_in_merging_slots_into_objects(tmp_path):
    """A bundle exported with `--merge-share` merges slots inside the graph as the checkpoint
    does (the parity gate compares against the merging model), records the share in its
    manifest, and verify re-checks it; merged-away slots come out as empty channels."""
    from export.verify import parity_gate, verify_bundle
    from runtime.contract import INPUT_NAME, OUTPUT_MASKS, to_model_input
    from tests.conftest import small_checkpoint, small_config

    cfg = small_config(
        encoder={"stride": 2},
        slot_attention={"locality": 1.0, "locality_window": 0.25},
        decoder={"attention_prior": True, "slot_centric": True},
    )
    ckpt = small_checkpoint(tmp_path / "m.safetensors", cfg)
    res = run_module("export", "onnx", "--checkpoint", ckpt, "--out", tmp_path / "b",
                     "--merge-share", "0.05", "--no-variants", "--label-set", "none")  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    manifest = load_bundle(tmp_path / "b")
    assert manifest.model.decoder.merge_share == 0.05
    report = verify_bundle(tmp_path / "b", ckpt)
    parity_gate(report)
    assert all(f["argmax_agreement"] == 1.0 for f in report["batches"].values())

    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "b" / "model.onnx"))
    images = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    (masks,) = session.run([OUTPUT_MASKS], {INPUT_NAME: to_model_input(images, manifest.input)})
    empty = masks.reshape(6, 4, -1).max(-1) == 0
    assert empty.any(), "this model at share 0.05 merges some slots: their channels are 0"
    assert np.allclose(masks.sum(1), 1.0, atol=1e-5)

    bad = run_module("export", "onnx", "--checkpoint", ckpt, "--out", tmp_path / "c",
                     "--merge-share", "0.7")  # fmt: skip
    assert bad.returncode == 2 and "--merge-share: must be a number in [0, 0.5)" in bad.stderr


def test_export_refuses_to_overwrite_another_bundle_at_once(exported, tmp_path):
    """--out holding a bundle of another checkpoint, or files that are no bundle: exit 2 with
    one line before any export work, the files untouched."""
    import shutil

    from service.settings import DEFAULT_BUNDLE

    ckpt, bundle, _ = exported
    other = shutil.copytree(bundle, tmp_path / "other")
    before = {p.name: p.read_bytes() for p in other.iterdir()}
    shipped = DEFAULT_BUNDLE / "model.safetensors"
    res = run_module("export", "onnx", "--checkpoint", shipped, "--out", other, timeout=120)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        f"error: {other} holds a bundle of another checkpoint; pass --force to overwrite it, "
        "or choose another --out"
    ]
    assert {p.name: p.read_bytes() for p in other.iterdir()} == before
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("mine")
    res = run_module("export", "onnx", "--checkpoint", ckpt, "--out", junk, timeout=120)
    assert res.returncode == 2 and "holds files but no bundle" in res.stderr
    assert [p.name for p in junk.iterdir()] == ["notes.txt"]


def test_export_leaves_an_identical_bundle_as_it_is_and_prints_stages(tmp_path):
    from tests.conftest import small_checkpoint, small_config

    ckpt = small_checkpoint(tmp_path / "m.safetensors", small_config())
    out = tmp_path / "bundle"
    args = ("export", "onnx", "--checkpoint", ckpt, "--out", out, "--no-variants",
            "--label-scenes", "8")  # fmt: skip
    first = run_module(*args, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    stages = [line for line in first.stderr.splitlines() if line.startswith("export: ")]
    names = [s.removeprefix("export: ").split(":")[0].split()[0] for s in stages]
    assert names == ["graph", "check", "parity", "labels", "wrote"], stages
    assert len(first.stderr) < 2000, first.stderr[-3000:]  # no library INFO lines or warnings
    assert oct(out.stat().st_mode & 0o777) == "0o755"
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = run_module(*args, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "already holds this bundle: left as it is" in again.stderr
    assert json.loads(again.stdout)["unchanged"] is True
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bundle-")]
    assert load_bundle(out).serving.max_batch_size is None  # the service's default then
    # a batch limit of its own is another bundle: refused over this one, recorded with --force
    limited = run_module(*args, "--max-batch-size", "4", timeout=600)
    assert limited.returncode != 0 and "holds a different bundle" in limited.stderr
    limited = run_module(*args, "--max-batch-size", "4", "--force", timeout=600)
    assert limited.returncode == 0, limited.stderr[-2000:]
    assert load_bundle(out).serving.max_batch_size == 4


def test_placing_a_bundle_over_a_different_one_needs_force(tmp_path):
    from export.bundle_dir import place

    out, staging = tmp_path / "out", tmp_path / "staging"
    out.mkdir()
    (out / "manifest.json").write_text("old")
    staging.mkdir()
    (staging / "manifest.json").write_text("new")
    with pytest.raises(BundleError, match="holds a different bundle; pass --force"):
        place(staging, out, force=False)
    assert (out / "manifest.json").read_text() == "old"
    place(staging, out, force=True)
    assert (out / "manifest.json").read_text() == "new" and not staging.exists()


def test_labels_are_named_on_the_set_the_checkpoint_was_trained_on_unless_told(tmp_path):
    """`export onnx` without --label-set names the codes on the labelled set recorded in the
    checkpoint (photos after `make train-photos`; here none, for a model of unlabelled
    photos); `export labels` keeps a bundle's own set; an explicit --label-set wins."""
    import json

    from tests.conftest import small_checkpoint
    from training.checkpoint import load_checkpoint, read_info, save_checkpoint

    model, info = load_checkpoint(small_checkpoint(tmp_path / "m.safetensors"))
    info.label_set = "none"
    ckpt = save_checkpoint(model, tmp_path / "none.safetensors", info)
    assert read_info(ckpt).label_set == "none"
    res = run_module("export", "onnx", "--checkpoint", ckpt, "--out", tmp_path / "b",
                     "--no-variants", "--label-scenes", "16")  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    assert "on 16 + 16 none scenes" in res.stderr
    bundle = load_bundle(tmp_path / "b")
    assert bundle.label_set == "none" and all(c.label is None for c in bundle.code_labels)

    kept = run_module("export", "labels", "--bundle", tmp_path / "b", "--label-scenes", "16")
    assert kept.returncode == 0, kept.stderr[-2000:]
    assert json.loads(kept.stdout)["label_set"] == "none"
    told = run_module("export", "labels", "--bundle", tmp_path / "b", "--label-scenes", "16",
                      "--label-set", "shapes")  # fmt: skip
    assert told.returncode == 0, told.stderr[-2000:]
    assert load_bundle(tmp_path / "b").label_set == "shapes"
