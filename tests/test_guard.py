"""The request guard as a plain ASGI middleware (no BentoML): limits, upload shape, shedding."""

from __future__ import annotations

import asyncio

import httpx

from service.guard import RequestGuard, UploadRoute

ROUTES = {"/decompose": UploadRoute("image", 1, 1000)}


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


def test_admission_sheds_before_reading_the_body():
    from service.errors import Overloaded

    app, refused, asked = Echo(), [], []

    def admit(images):
        asked.append(images)
        raise Overloaded("the model is saturated; retry shortly", 3)

    guard = RequestGuard(app, ROUTES, 1000, on_refuse=lambda p, r: refused.append(r), admit=admit)
    r = post(guard, files={"image": ("a.png", b"x" * 10)})
    assert r.status_code == 503 and r.json() == {
        "error": "the model is saturated; retry shortly",
        "reason": "overloaded",
    }
    assert r.headers["retry-after"] == "3"
    assert app.calls == 0 and refused == ["overloaded"] and asked == [1]


def test_an_admitted_request_holds_its_place_until_it_is_answered():
    """The guard enters what admission hands back around the whole request, and leaves it
    when the answer is out (a refused upload leaves it too)."""
    from contextlib import contextmanager

    app, held = Echo(), []

    @contextmanager
    def admit(images):
        held.append("in")
        try:
            yield
        finally:
            held.append("out")

    guard = RequestGuard(app, ROUTES, 1000, admit=admit)
    assert post(guard, files={"image": ("a.png", b"x" * 10)}).status_code == 200
    assert app.calls == 1 and held == ["in", "out"]
    assert post(guard, files={"other": ("a.png", b"x")}).status_code == 400
    assert held == ["in", "out", "in", "out"]


def test_a_refusal_is_held_before_it_is_sent():
    """The batcher's refusal carries a hold: a client that resends at once waits it out, so
    refusals cannot spin faster than one per hold per client."""
    import time

    from service.errors import Overloaded

    def admit(images):
        raise Overloaded("the model is saturated; retry shortly", 2, hold_s=0.2)

    guard = RequestGuard(Echo(), ROUTES, 1000, admit=admit)
    started = time.perf_counter()
    r = post(guard, files={"image": ("a.png", b"x" * 10)})
    assert r.status_code == 503 and r.headers["retry-after"] == "2"
    assert time.perf_counter() - started >= 0.2


def test_a_refusal_is_held_one_latency_budget_unless_set(monkeypatch):
    """The hold follows the budget by default (a refusal comes no sooner than an answer at
    the budget's edge would); SLOTSERVE_SHED_HOLD_MS sets it apart."""
    from service.settings import Settings

    monkeypatch.setenv("SLOTSERVE_MAX_LATENCY_MS", "750")
    assert Settings().shed_hold == 750
    monkeypatch.setenv("SLOTSERVE_SHED_HOLD_MS", "0")
    assert Settings().shed_hold == 0
