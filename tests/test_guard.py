"""The admission gate and the request guard as plain ASGI apps (no server): shedding, limits,
upload shape; and the gate's place in front of the app BentoML builds."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from service.guard import AdmissionGate, RequestGuard, UploadRoute

ROUTES = {"/decompose": UploadRoute("image", 1, 1000)}
PATHS = frozenset(ROUTES)


class Echo:
    """The app behind the guard: answers with the size of the body it received."""

    def __init__(self):
        self.calls = 0

    async def __call__(self, scope, receive, send):
        self.calls += 1
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(len(body)).encode()})


def post(guard, **kw) -> httpx.Response:
    async def go():
        transport = httpx.ASGITransport(app=guard)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.post("/decompose", **kw)

    return asyncio.run(go())


def test_a_good_upload_reaches_the_app_byte_for_byte():
    app, refused = Echo(), []
    guard = RequestGuard(app, ROUTES, 1000, on_refuse=lambda p, r: refused.append(r))
    r = post(guard, files={"image": ("a.png", b"x" * 100)})
    sent = httpx.Request("POST", "http://t", files={"image": ("a.png", b"x" * 100)})
    assert r.status_code == 200 and int(r.text) == len(sent.read())
    assert app.calls == 1 and refused == []


def test_refusals_are_counted_and_never_reach_the_app():
    app, refused = Echo(), []
    guard = RequestGuard(app, ROUTES, 1000, on_refuse=lambda p, r: refused.append(r))
    assert post(guard, files={"image": ("a.png", b"x" * 2000)}).status_code == 413
    assert post(guard, files={"other": ("a.png", b"x")}).status_code == 400
    assert post(guard, json={"image": "x"}).status_code == 415
    assert app.calls == 0
    assert refused == ["upload_too_large", "wrong_field", "wrong_content_type"]


class Refuse:
    """admit() of a saturated batcher: records what it was asked, raises `Overloaded`."""

    def __init__(self, hold_s: float = 0.0):
        self.hold_s, self.asked = hold_s, []

    def __call__(self, images):
        from service.errors import Overloaded

        self.asked.append(images)
        raise Overloaded("the model is saturated; retry shortly", 3, hold_s=self.hold_s)


def test_admission_sheds_before_anything_reads_the_body():
    app, refused, admit = Echo(), [], Refuse()
    gate = AdmissionGate(app, PATHS, admit, on_refuse=lambda p, r: refused.append(r))
    r = post(gate, files={"image": ("a.png", b"x" * 10)})
    assert r.status_code == 503 and r.json() == {
        "error": "the model is saturated; retry shortly",
        "reason": "overloaded",
    }
    assert r.headers["retry-after"] == "3"
    assert app.calls == 0 and refused == ["overloaded"] and admit.asked == [1]


def test_the_gate_asks_only_for_posts_to_the_model_routes():
    app, admit = Echo(), Refuse()
    gate = AdmissionGate(app, PATHS, admit)

    async def go():
        transport = httpx.ASGITransport(app=gate)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return [
                await client.get("/decompose"),
                await client.post("/model", content=b"x"),
                await client.post("/decompose/", files={"image": ("a.png", b"x")}),
            ]

    get, other, trailing_slash = asyncio.run(go())
    assert get.status_code == other.status_code == 200 and app.calls == 2
    assert trailing_slash.status_code == 503 and admit.asked == [1]


def test_an_admitted_request_holds_its_place_until_it_is_answered():
    """The gate enters what admission hands back around the whole request (the guard's
    checks and the app), and leaves it when the answer is out (a refused upload too)."""
    from contextlib import contextmanager

    app, held = Echo(), []

    @contextmanager
    def admit(images):
        held.append("in")
        try:
            yield
        finally:
            held.append("out")

    guard = RequestGuard(app, ROUTES, 1000)
    gate = AdmissionGate(guard, PATHS, admit)
    assert post(gate, files={"image": ("a.png", b"x" * 10)}).status_code == 200
    assert app.calls == 1 and held == ["in", "out"]
    assert post(gate, files={"other": ("a.png", b"x")}).status_code == 400
    assert held == ["in", "out", "in", "out"]


def test_a_refusal_is_held_before_it_is_sent():
    """The batcher's refusal carries a hold: a client that resends at once waits it out, so
    refusals cannot spin faster than one per hold per client."""
    import time

    gate = AdmissionGate(Echo(), PATHS, Refuse(hold_s=0.2))
    started = time.perf_counter()
    r = post(gate, files={"image": ("a.png", b"x" * 10)})
    assert r.status_code == 503 and r.headers["retry-after"] == "3"
    assert time.perf_counter() - started >= 0.2


def test_the_gate_is_in_front_of_everything_bentoml_builds(monkeypatch):
    """What BentoML's worker serves (`to_asgi`) is the gate around BentoML's app, whose own
    middleware (request metrics, tracing, access log, timeout) and the request guard sit
    behind it: a refusal is answered before any of them runs."""
    from service import middleware
    from service.app import SlotServe

    app = SlotServe.to_asgi()
    assert isinstance(app, AdmissionGate) and app.paths == middleware.UPLOAD_PATHS
    inner = [m.cls.__name__ for m in app.app.user_middleware]
    assert "RunnerTrafficMetricsMiddleware" in inner and "AccessLogMiddleware" in inner
    assert inner.index("RequestGuard") > inner.index("TimeoutMiddleware")

    refused, admit = [], Refuse()
    monkeypatch.setattr(middleware, "admit", admit)
    monkeypatch.setattr(middleware, "on_refuse", lambda path, reason: refused.append(path))
    r = post(app, files={"image": ("a.png", b"x" * 10)})
    assert r.status_code == 503 and r.json()["reason"] == "overloaded"
    assert admit.asked == [1] and refused == ["/decompose"]


def test_install_refuses_a_service_class_it_does_not_know():
    from service.middleware import install
    from service.settings import Settings

    class Other:
        pass

    with pytest.raises(TypeError, match="BentoML's service class changed"):
        install(Other(), Settings(), ["decompose", "visualize", "decompose_batch"])


def test_a_refusal_is_held_one_latency_budget_unless_set(monkeypatch):
    """The hold follows the budget by default (a refusal comes no sooner than an answer at
    the budget's edge would); SLOTSERVE_SHED_HOLD_MS sets it apart."""
    from service.settings import Settings

    monkeypatch.setenv("SLOTSERVE_MAX_LATENCY_MS", "750")
    assert Settings().shed_hold == 750
    monkeypatch.setenv("SLOTSERVE_SHED_HOLD_MS", "0")
    assert Settings().shed_hold == 0


def test_a_bundles_batch_limit_applies_unless_the_environment_sets_one(monkeypatch):
    """A manifest's serving.max_batch_size replaces the default of 32 (as a Triton model's
    config owns its max_batch_size); SLOTSERVE_MAX_BATCH_SIZE, when set, wins."""
    from runtime.contract import ServingSpec, read_manifest
    from service.settings import DEFAULT_BUNDLE, Settings

    plain = read_manifest(DEFAULT_BUNDLE)
    limited = plain.model_copy(update={"serving": ServingSpec(max_batch_size=4)})
    monkeypatch.delenv("SLOTSERVE_MAX_BATCH_SIZE", raising=False)
    assert Settings().for_bundle(plain).max_batch_size == 32
    assert Settings().for_bundle(limited).max_batch_size == 4
    monkeypatch.setenv("SLOTSERVE_MAX_BATCH_SIZE", "32")  # set, even to the default: it wins
    assert Settings().for_bundle(limited).max_batch_size == 32
