"""The monitoring files: Prometheus config, recording and alerting rules, Grafana dashboard.

promtool checks the config and the rules and runs the rules' unit tests. Every metric a
rule, a rule test or a dashboard query names must be one the service really exports: the
SlotServe families come from `service.metrics.ServiceMetrics` itself, BentoML's from a list
checked against a live server's /metrics (tests/test_prometheus.py scrapes one for real).

Without promtool these tests skip, except in CI (CI set), where a missing tool fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
MONITORING = REPO / "monitoring"
PROMETHEUS_YML = MONITORING / "prometheus.yml"
RULES = MONITORING / "rules" / "slotserve.rules.yml"
RULE_TESTS = MONITORING / "rules" / "tests.yml"
DASHBOARD = MONITORING / "grafana" / "slotserve-dashboard.json"

_BENTOML_SERVICE = {"runner_name", "service_name", "service_version"}
_BENTOML_HTTP = _BENTOML_SERVICE | {"endpoint", "http_response_code"}
_BENTOML_BATCH = _BENTOML_SERVICE | {"method_name", "worker_index"}
BENTOML_METRICS: dict[str, set[str]] = {
    # Seen on `bentoml serve` (BentoML 1.4) /metrics after HTTP requests, with these labels.
    "bentoml_service_request_total": _BENTOML_HTTP,
    "bentoml_service_request_duration_seconds_bucket": _BENTOML_HTTP | {"le"},
    "bentoml_service_request_duration_seconds_sum": _BENTOML_HTTP,
    "bentoml_service_request_duration_seconds_count": _BENTOML_HTTP,
    "bentoml_service_request_in_progress": _BENTOML_SERVICE | {"endpoint"},
    "bentoml_service_adaptive_batch_size_bucket": _BENTOML_BATCH | {"le"},
    "bentoml_service_adaptive_batch_size_sum": _BENTOML_BATCH,
    "bentoml_service_adaptive_batch_size_count": _BENTOML_BATCH,
    "bentoml_service_last_request_timestamp_seconds": _BENTOML_SERVICE | {"pid"},
}
PROMETHEUS_METRICS: dict[str, set[str]] = {"up": set()}
TARGET_LABELS = {"job", "instance"}
"""Labels Prometheus attaches to every scraped series."""

SEVERITIES = {"critical", "warning", "info"}


def require_tool(name: str) -> str:
    """The tool's path; skips when it is missing, but fails under CI (CI set)."""
    path = shutil.which(name)
    if path is None:
        message = f"`{name}` is not installed (Debian/Ubuntu: apt-get install -y prometheus)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [require_tool("promtool"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


# --------------------------------------------------------------------------------------------
# what the service exports
# --------------------------------------------------------------------------------------------


def service_metrics() -> dict[str, set[str]]:
    """Sample name -> label names of SlotServe's own metrics, from `ServiceMetrics` itself.

    Labelled families have no samples until a child exists, so one child is created per
    family; `_created` samples are left out (multiprocess mode, as served, has none).
    """
    from prometheus_client import CollectorRegistry

    from service.metrics import ServiceMetrics

    registry = CollectorRegistry()
    metrics = ServiceMetrics(registry=registry)
    for metric in vars(metrics).values():
        labelnames = getattr(metric, "_labelnames", ())
        if labelnames:
            metric.labels(*["x"] * len(labelnames))
    names: dict[str, set[str]] = {}
    for family in registry.collect():
        for sample in family.samples:
            if not sample.name.endswith("_created"):
                names.setdefault(sample.name, set()).update(sample.labels)
    return names


def load_rules() -> list[dict]:
    return [
        rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    ]


def recording_rules() -> set[str]:
    return {rule["record"] for rule in load_rules() if "record" in rule}


def exported_metrics() -> dict[str, set[str]]:
    """Every raw metric a query may name, with the labels its series carry."""
    known = {**service_metrics(), **BENTOML_METRICS, **PROMETHEUS_METRICS}
    return {name: labels | TARGET_LABELS for name, labels in known.items()}


# --------------------------------------------------------------------------------------------
# a small PromQL reader: which metric names a query selects, and with which label matchers
# --------------------------------------------------------------------------------------------

PROMQL_KEYWORDS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "by", "without", "on", "ignoring", "group_left",
    "group_right", "and", "or", "unless", "bool", "offset", "atan2", "inf", "nan",
}  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_RANGE = re.compile(r"\[[^\]]*\]")
_SELECTOR = re.compile(r"([a-zA-Z_:][\w:]*)?\s*\{([^}]*)\}")
_MATCHER = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+")
_IDENT = re.compile(r"(?<![\w:.$])([a-zA-Z_:][\w:]*)(?![\w:])(?!\s*\()")


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(metric name, label names matched) for each vector selector in `expr`."""
    text = _STRING.sub('""', expr)
    text = _VARIABLE.sub("", _RANGE.sub("", text))
    found: list[tuple[str, set[str]]] = []

    def braces(match: re.Match) -> str:
        labels = set(_MATCHER.findall(match.group(2)))
        if match.group(1):
            found.append((match.group(1), labels))
            return " "
        return " " if labels else match.group(0)

    text = _SELECTOR.sub(braces, text)
    text = _GROUPING.sub(" ", text)
    for name in _IDENT.findall(text):
        if name.lower() not in PROMQL_KEYWORDS:
            found.append((name, set()))
    return found


def unknown_names(expr: str, known: dict[str, set[str]], recorded: set[str]) -> list[str]:
    """Problems with `expr`: names not exported, label matchers a metric does not have."""
    problems = []
    for name, labels in selectors(expr):
        if name in recorded:
            continue
        if name not in known:
            problems.append(f"unknown metric {name}")
        elif extra := labels - known[name] - {"__name__"}:
            problems.append(f"{name} has no label(s) {sorted(extra)}")
    return problems


def test_selector_reader_finds_names_and_matchers() -> None:
    expr = (
        'sum by (le, stage) (rate(a_bucket{stage="total", le!~"x{1}"}[$__rate_interval]))'
        " / on (instance) group_left(model) b_info or vector(0) > bool 1e-3"
        ' and topk(3, c:recorded:rate1m offset 5m) unless count_values("v", d)'
    )
    assert sorted((n, sorted(labels)) for n, labels in selectors(expr)) == [
        ("a_bucket", ["le", "stage"]),
        ("b_info", []),
        ("c:recorded:rate1m", []),
        ("d", []),
    ]
    known = {"a_bucket": {"le"}, "b_info": set(), "d": set()}
    assert unknown_names(expr, known, {"c:recorded:rate1m"}) == [
        "a_bucket has no label(s) ['stage']"
    ]


def test_service_exports_the_documented_metrics() -> None:
    names = service_metrics()
    for name, labels in {
        "slotserve_batch_images_bucket": {"le"},
        "slotserve_stage_seconds_bucket": {"le", "stage", "protocol"},
        "slotserve_inference_seconds_count": {"backend", "provider", "variant"},
        "slotserve_requests_total": {"protocol", "endpoint", "outcome"},
        "slotserve_images_total": {"protocol"},
        "slotserve_objects_total": {"protocol"},
        "slotserve_errors_total": {"reason", "protocol"},
        "slotserve_code_assignments_total": {"code"},
        "slotserve_code_drift": set(),
        "slotserve_model_info": {"model", "version", "backend", "provider", "variant"},
    }.items():
        assert names.get(name) == labels, name


# --------------------------------------------------------------------------------------------
# Prometheus config and rules
# --------------------------------------------------------------------------------------------


def test_promtool_checks_the_config() -> None:
    result = promtool("check", "config", str(PROMETHEUS_YML))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout + result.stderr


def test_prometheus_config_scrapes_the_service() -> None:
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "slotserve"]
    assert job["metrics_path"] == "/metrics"
    assert job["scrape_interval"] == "5s"
    assert job["static_configs"][0]["targets"] == ["127.0.0.1:3000"]
    assert sorted(PROMETHEUS_YML.parent.glob(config["rule_files"][0])) == [RULES]


def test_promtool_checks_the_rules() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rule_unit_tests_pass() -> None:
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_rules_reference_only_exported_metrics() -> None:
    known, recorded = exported_metrics(), recording_rules()
    problems = {
        rule.get("record") or rule["alert"]: unknown_names(rule["expr"], known, recorded)
        for rule in load_rules()
    }
    assert {k: v for k, v in problems.items() if v} == {}
    assert all(name.startswith("slotserve:") for name in recorded)


def test_every_alert_is_labelled_annotated_and_unit_tested() -> None:
    alerts = {rule["alert"]: rule for rule in load_rules() if "alert" in rule}
    assert set(alerts) >= {
        "SlotServeDown",
        "SlotServeLatencyHigh",
        "SlotServeErrorRatioHigh",
        "SlotServeShedding",
        "SlotServeCodeDrift",
    }
    cases: dict[str, list[bool]] = {}
    for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for case in test.get("alert_rule_test", []):
            cases.setdefault(case["alertname"], []).append(bool(case.get("exp_alerts")))
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in SEVERITIES, name
        assert rule["annotations"]["summary"].strip(), name
        assert rule["annotations"]["description"].strip(), name
        assert "\n" not in rule["annotations"]["summary"], name
        assert True in cases.get(name, []), f"no unit test where {name} fires"
        assert False in cases.get(name, []), f"no unit test where {name} stays silent"


def test_rule_unit_tests_feed_real_series() -> None:
    """The unit tests' input series are named and labelled as the service exports them."""
    known = exported_metrics()
    problems = []
    for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for series in test["input_series"]:
            problems += unknown_names(series["series"], known, set())
    assert problems == []
    tested = {
        case["expr"].split("{")[0]
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test.get("promql_expr_test", [])
    }
    assert recording_rules() - tested == set(), "recording rules without a unit test"


# --------------------------------------------------------------------------------------------
# Grafana dashboard
# --------------------------------------------------------------------------------------------


def load_dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_panels(dashboard: dict) -> list[dict]:
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # collapsed rows
    return [p for p in panels if p.get("type") != "row"]


def dashboard_queries(dashboard: dict | None = None) -> list[tuple[str, str]]:
    """(panel title, PromQL with Grafana's variables) of every panel target."""
    dashboard = dashboard or load_dashboard()
    return [
        (panel["title"], target["expr"])
        for panel in dashboard_panels(dashboard)
        for target in panel.get("targets", [])
    ]


def grafana_to_promql(expr: str, interval: str = "1m") -> str:
    """A dashboard query as Prometheus would receive it, every variable set to 'all'."""
    expr = re.sub(r"\$__(rate_interval|interval|range)\b", interval, expr)
    return re.sub(r"\$\{[^}]*\}|\$\w+", ".*", expr)


def test_dashboard_structure() -> None:
    dashboard = load_dashboard()
    assert dashboard["schemaVersion"] >= 36
    assert dashboard["uid"] == "slotserve"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    panels = dashboard_panels(dashboard)
    assert len({p["id"] for p in panels}) == len(panels), "panel ids repeat"
    cells = set()
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
        assert panel["targets"], panel["title"]
        assert {t["refId"] for t in panel["targets"]} == {
            chr(ord("A") + i) for i in range(len(panel["targets"]))
        }, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24, panel["title"]
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & mine, f"{panel['title']} overlaps another panel"
        cells |= mine
    titles = " | ".join(p["title"].lower() for p in panels)
    for words in (
        "throughput",
        "latency percentiles by stage",
        "model call latency by backend",
        "images per model call",
        "errors by reason",
        "shed",
        "code usage",
        "code drift",
        "model",
    ):
        assert words in titles, words
    assert any(p["type"] == "gauge" and "drift" in p["title"].lower() for p in panels)
    assert any(p["type"] == "table" for p in panels)


def test_dashboard_queries_reference_only_exported_metrics() -> None:
    known, recorded = exported_metrics(), recording_rules()
    queries = dashboard_queries()
    templating = [
        (v["name"], v["definition"])
        for v in load_dashboard()["templating"]["list"]
        if v["type"] == "query"
    ]
    problems = {}
    for title, expr in queries + templating:
        expr = re.sub(r"label_values\((.*),\s*\w+\)$", r"\1", expr)
        if found := unknown_names(expr, known, recorded):
            problems[title] = found
    assert problems == {}
    used = {name for _, expr in queries for name, _ in selectors(expr)}
    assert {m for m in service_metrics() if not m.endswith(("_sum", "_count", "_bucket"))} | {
        "slotserve_stage_seconds_bucket",
        "slotserve_inference_seconds_bucket",
        "slotserve_batch_images_bucket",
    } <= used, "a SlotServe metric has no panel"


def test_dashboard_queries_parse(tmp_path) -> None:
    """promtool parses every dashboard query (each as a recording rule of a scratch file)."""
    rules = [
        {"record": f"dashboard:query:{i}", "expr": grafana_to_promql(expr)}
        for i, (_, expr) in enumerate(dashboard_queries())
    ]
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_model_call_normalises_images_as_the_manifest_says():
    """The service feeds the backend what the bundle's input contract asks for: with ImageNet
    mean / std in the manifest, not pixel / 255."""
    from prometheus_client import CollectorRegistry

    from runtime.backends import Backend, ModelOutputs
    from runtime.contract import load_bundle
    from service.metrics import ServiceMetrics
    from service.runner import ModelRunner
    from service.settings import DEFAULT_BUNDLE

    manifest = load_bundle(DEFAULT_BUNDLE)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    manifest = manifest.model_copy(
        update={"input": manifest.input.model_copy(update={"mean": mean, "std": std})}
    )
    k, h, w = manifest.num_slots, manifest.input.height, manifest.input.width

    class Recording(Backend):
        name, provider, variant = "recording", "cpu", "fp32"

        def infer(self, images):
            self.seen = images
            n = len(images)
            return ModelOutputs(
                np.full((n, k, h, w), 1 / k, np.float32),
                np.zeros((n, k), np.int64),
                np.zeros((n, k), np.float32),
            )

    backend = Recording()
    runner = ModelRunner(backend, manifest, ServiceMetrics(registry=CollectorRegistry()))
    images = np.full((1, h, w, 3), 255, np.uint8)
    runner(images)
    expected = (1.0 - np.array(mean)) / np.array(std)
    assert np.allclose(backend.seen[0, :, 0, 0], expected, atol=1e-6)
