"""HTTP answers of the model routes: the outcome counted, a refusal as its status with a
one-line reason (and `Retry-After` when shed), a result as JSON."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from starlette.responses import JSONResponse, Response

from service.errors import Overloaded, RequestError
from service.metrics import ServiceMetrics

HTTP_ENDPOINTS = ["decompose", "decompose_batch", "visualize"]
GRPC_ENDPOINTS = ["Decompose", "DecomposeBatch", "DecomposeStream"]
ENDPOINTS = {"http": HTTP_ENDPOINTS, "grpc": GRPC_ENDPOINTS}
# BentoML wraps every request, and every message it sends back, in OpenTelemetry spans even
# when no exporter is configured: a fifth of the worker's request-handling CPU on the model
# routes. They go untraced unless SLOTSERVE_TRACE_MODEL_ROUTES is set (for a real exporter).
UNTRACED_ROUTES = [f"/{e}" for e in HTTP_ENDPOINTS]


def count_http(metrics: ServiceMetrics, endpoint: str, outcome: str) -> None:
    """One HTTP request's outcome: `ok` or the refusal / failure reason."""
    metrics.requests.labels("http", endpoint, outcome).inc()
    if outcome != "ok":
        metrics.errors.labels(outcome, "http").inc()


def count_refusal(metrics: ServiceMetrics, path: str, reason: str) -> None:
    """The request guard's refusals (they never reach an API method) count like the others."""
    endpoint = path.strip("/")
    count_http(metrics, endpoint if endpoint in HTTP_ENDPOINTS else "other", reason)


def refusal(err: RequestError) -> JSONResponse:
    headers = {"Retry-After": str(err.retry_after_s)} if isinstance(err, Overloaded) else None
    body = {"error": err.message, "reason": err.reason}
    return JSONResponse(body, status_code=err.http_status, headers=headers)


def json_response(body: dict) -> Response:
    """Our dicts already have the schema's shape (tests check them against it); encoding them
    directly skips a pydantic round trip on every response."""
    return Response(json.dumps(body, separators=(",", ":")), media_type="application/json")


async def answer(
    metrics: ServiceMetrics, endpoint: str, work: Callable[[], Awaitable], respond
) -> Response:
    """Run one request's work and count its outcome: ok, a refusal (its 4xx / 503 with the
    one-line reason) or a bug (counted, then re-raised: BentoML answers 500 and logs it)."""
    try:
        result = await work()
    except RequestError as err:
        count_http(metrics, endpoint, err.reason)
        return refusal(err)
    except Exception:
        count_http(metrics, endpoint, "internal")
        raise
    count_http(metrics, endpoint, "ok")
    return respond(result)
