"""Configuration: YAML + base chains + dotted overrides, validated at construction."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from training.config import ModelConfig, TrainConfig, apply_overrides, load_train_config

SHIPPED = Path(__file__).parents[1] / "models" / "slotserve-shapes" / "training-config.yaml"
# Where and how fast a run goes, not what it trains: free to differ from the shipped run.
MACHINE_FIELDS = {"out_dir", "threads"}


def test_defaults_are_the_shipped_model_and_recipe():
    """`TrainConfig()` is the configuration the shipped model was trained with (model, data,
    optimisation, steps, precision, schedule), and `default.yaml` adds nothing to it: a
    default that drifts from what ships fails here, field by field."""
    shipped = TrainConfig.model_validate(yaml.safe_load(SHIPPED.read_text()))
    ours = TrainConfig()

    def recipe(cfg: TrainConfig) -> dict:
        raw = cfg.model_dump(mode="json")
        raw["run"] = {k: v for k, v in raw["run"].items() if k not in MACHINE_FIELDS}
        return raw

    def flat(raw: dict, prefix: str = "") -> dict:
        out = {}
        for key, value in raw.items():
            if isinstance(value, dict):
                out.update(flat(value, f"{prefix}{key}."))
            else:
                out[f"{prefix}{key}"] = value
        return out

    a, b = flat(recipe(ours)), flat(recipe(shipped))
    assert {k: (a[k], b.get(k)) for k in a if a[k] != b.get(k)} == {}
    assert set(a) == set(b)
    assert load_train_config("default") == ours


def test_overrides_parse_yaml_scalars():
    raw = apply_overrides(
        {"run": {"max_steps": 5}},
        ["run.max_steps=7", "model.modulation.enabled=false", "run.max_minutes=null"],
    )
    assert raw == {
        "run": {"max_steps": 7, "max_minutes": None},
        "model": {"modulation": {"enabled": False}},
    }


def test_ablation_config_inherits_default_and_turns_topdown_off():
    default, ablation = load_train_config("default"), load_train_config("no_topdown")
    assert default.model.modulation.enabled and not ablation.model.modulation.enabled
    # same budget and recipe otherwise
    assert ablation.run.max_minutes == default.run.max_minutes
    assert ablation.optim == default.optim and ablation.data == default.data
    assert ablation.model.decoder == default.model.decoder


def test_unknown_keys_and_bad_values_are_rejected():
    with pytest.raises(ValidationError):
        TrainConfig.model_validate({"model": {"slot_attention": {"num_slotz": 3}}})
    with pytest.raises(ValidationError, match="broadcast_size"):
        ModelConfig.model_validate({"decoder": {"kind": "conv", "broadcast_size": 7}})
    with pytest.raises(ValidationError, match=r"needs decoder\.kind=mlp"):
        ModelConfig.model_validate({"decoder": {"kind": "conv", "slot_centric": True}})
    with pytest.raises(ValueError, match=r"key\.sub=value"):
        apply_overrides({}, ["no-equals-sign"])
    with pytest.raises(FileNotFoundError, match="known"):
        load_train_config("does-not-exist")


def test_retired_options_load_only_when_off():
    """Checkpoints and bundles from before the probe leftovers were removed list them at their
    off value: those load as if absent; a model that used one is refused, naming it."""
    from training.config import RETIRED

    old = {section: dict(fields) for section, fields in RETIRED.items()}
    assert ModelConfig.model_validate(old) == ModelConfig()
    with pytest.raises(ValidationError, match=r"decoder\.film=True: this option was removed"):
        ModelConfig.model_validate({"decoder": {"film": True}})
    with pytest.raises(ValidationError, match="free_slots"):
        TrainConfig.model_validate({"model": {"slot_attention": {"free_slots": 1}}})


def test_key_pool_must_be_odd():
    with pytest.raises(ValidationError, match="key_pool must be odd"):
        ModelConfig.model_validate({"slot_attention": {"key_pool": 2}})
    assert (
        ModelConfig.model_validate({"slot_attention": {"key_pool": 5}}).slot_attention.key_pool == 5
    )


def test_key_pool_mix_needs_pooling_and_stays_in_range():
    with pytest.raises(ValidationError, match="key_pool_mix needs"):
        ModelConfig.model_validate({"slot_attention": {"key_pool": 1, "key_pool_mix": 0.5}})
    for bad in (0.0, 1.5):
        with pytest.raises(ValidationError, match="key_pool_mix"):
            ModelConfig.model_validate({"slot_attention": {"key_pool": 3, "key_pool_mix": bad}})
    cfg = ModelConfig.model_validate({"slot_attention": {"key_pool": 3, "key_pool_mix": 0.5}})
    assert cfg.slot_attention.key_pool_mix == 0.5


def test_default_recipe_half_pools_keys_and_the_v1_recipe_is_two_overrides_away():
    sa = load_train_config("default").model.slot_attention
    assert (sa.key_pool, sa.key_pool_mix) == (3, 0.5)
    # the ablation compares like with like: same pooling, top-down off
    assert load_train_config("no_topdown").model.slot_attention == sa
    # turning pooling off alone is refused with the fix in the message; both overrides work
    with pytest.raises(ValidationError, match=re.escape("key_pool=1 key_pool_mix=1.0")):
        load_train_config("default", ["model.slot_attention.key_pool=1"])
    off = load_train_config(
        "default", ["model.slot_attention.key_pool=1", "model.slot_attention.key_pool_mix=1.0"]
    ).model.slot_attention
    assert (off.key_pool, off.key_pool_mix) == (1, 1.0)


@pytest.mark.parametrize(
    "cli, argv",
    [
        ("training", ["evaluate", "--checkpoint", "m.safetensors"]),
        ("training", ["demo", "--checkpoint", "m.safetensors"]),
        ("export", ["onnx", "--checkpoint", "m.safetensors", "--out", "bundle"]),
    ],
)
def test_inference_overrides_are_declared_once_for_every_cli(cli, argv, capsys):
    """evaluate, demo and export onnx take the same --iterations / --merge-share /
    --refine-radius, with the same defaults (the checkpoint's) and the same range checks."""
    from export.__main__ import _parser as export_parser
    from training.__main__ import _parser as training_parser
    from training.config import InferenceOverrides

    parser = {"training": training_parser, "export": export_parser}[cli]()
    default = InferenceOverrides.from_args(parser.parse_args(argv))
    assert default == InferenceOverrides() and not default
    given = parser.parse_args([*argv, "--iterations", "5", "--merge-share", "0.1"])
    assert InferenceOverrides.from_args(given) == InferenceOverrides(5, 0.1)
    radius = parser.parse_args([*argv, "--refine-radius", "24"])
    assert InferenceOverrides.from_args(radius) == InferenceOverrides(refine_radius=24)
    for bad in (["--iterations", "0"], ["--merge-share", "0.5"], ["--refine-radius", "-1"]):
        with pytest.raises(SystemExit):
            parser.parse_args([*argv, *bad])
        assert "must be" in capsys.readouterr().err


def test_inference_overrides_set_the_model_config_and_are_validated():
    from training.config import InferenceOverrides

    cfg = ModelConfig()
    assert InferenceOverrides().apply(cfg) is cfg
    changed = InferenceOverrides(iterations=9, merge_share=0.0).apply(cfg)
    assert changed.slot_attention.eval_iterations == 9 and changed.decoder.merge_share == 0.0
    assert changed.model_dump(exclude={"slot_attention", "decoder"}) == cfg.model_dump(
        exclude={"slot_attention", "decoder"}
    )
    with pytest.raises(ValidationError):
        InferenceOverrides(merge_share=0.7).apply(cfg)
    assert InferenceOverrides(refine_radius=24).apply(cfg).decoder.refine_radius == 24
