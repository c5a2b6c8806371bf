"""ASGI in front of BentoML: admission under overload, then size limits and upload shape.

`AdmissionGate` wraps the whole app BentoML builds (`service.middleware.FrontedService`), so a
request the batcher will not take is refused before any of BentoML's own middleware runs
(request metrics, tracing, access log, timeout task), before its body is read: 503 with
Retry-After, held `Overloaded.hold_s` first. Under a 4x open-loop overload on 2 cores most
requests are refused, and each of those layers cost the model's cores per refusal
(docs/benchmarks.md "Goodput under overload").

`RequestGuard` sits inside BentoML's stack, in front of its request parsing. BentoML answers
some malformed uploads with a 500 (a broken multipart body, a file under an unexpected field
name) and would accept JSON bodies for file fields. The guard answers those with a 4xx and a
one-line reason before BentoML sees them:

- 413 at once when Content-Length is over the route's limit; a chunked body is counted as it
  arrives and cut off at the limit (never spooled);
- 415 unless the body is multipart/form-data;
- 400 for a multipart body that does not parse, an unexpected or missing field, or one
  image where one is allowed; 413 for more images than SLOTSERVE_MAX_IMAGES.

A body that passes is replayed to BentoML unchanged. The guard only reads part headers.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from service.errors import Overloaded


@dataclass(frozen=True)
class UploadRoute:
    field: str
    max_files: int
    max_bytes: int


class Refusal(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


async def send_json(send, status: int, body: dict, extra_headers=()) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(payload))]
    headers += list(extra_headers)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def _header(scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value
    return None


def check_multipart(body: bytes, boundary: bytes, route: UploadRoute) -> int:
    """Parse part headers only; returns the number of files in `route.field` or refuses."""
    names: list[str] = []
    field, value = bytearray(), bytearray()
    headers: dict[bytes, bytes] = {}

    def on_header_field(data, start, end):
        field.extend(data[start:end])

    def on_header_value(data, start, end):
        value.extend(data[start:end])

    def on_header_end():
        headers[bytes(field).lower()] = bytes(value)
        field.clear()
        value.clear()

    def on_headers_finished():
        disposition, options = parse_options_header(headers.get(b"content-disposition", b""))
        if disposition != b"form-data" or b"name" not in options:
            raise Refusal(400, "bad_multipart", "a multipart part lacks its form-data name")
        name = options[b"name"].decode("utf-8", "replace")
        if name == route.field and b"filename" not in options:
            raise Refusal(
                400,
                "not_a_file",
                f"field '{name}' holds a text value; send the image as a file upload "
                "(a multipart part with a filename)",
            )
        names.append(name)
        headers.clear()

    parser = MultipartParser(
        boundary,
        {
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
        },
    )
    try:
        parser.write(body)
        parser.finalize()
    except MultipartParseError as err:
        raise Refusal(400, "bad_multipart", f"malformed multipart body: {err}") from err
    if parser.state.name != "END":
        raise Refusal(
            400, "bad_multipart", "malformed multipart body: it ends before its closing boundary"
        )
    others = sorted({n for n in names if n != route.field})
    if others:
        raise Refusal(
            400,
            "wrong_field",
            f"unexpected field(s) {others}; send the image(s) in field '{route.field}'",
        )
    count = len(names)
    if count == 0:
        raise Refusal(400, "missing_field", f"no '{route.field}' field; send the image(s) in it")
    if count > route.max_files:
        if route.max_files == 1:
            raise Refusal(
                400,
                "too_many_images",
                f"{count} files in '{route.field}'; send one (or use /decompose_batch)",
            )
        raise Refusal(
            413, "too_many_images", f"{count} images in one request; the limit is {route.max_files}"
        )
    return count


def _route_path(scope) -> str:
    return scope["path"].rstrip("/") or "/"


class AdmissionGate:
    """The outermost ASGI app: asks `admit(1)` for every POST to one of `paths` before
    anything else runs, and answers a refusal (`Overloaded`) itself: held `hold_s`, then 503
    with Retry-After and a one-line reason. An admitted request runs inside what `admit`
    handed back (its place in the batcher's queue) until its answer is out; everything else
    passes through untouched."""

    def __init__(
        self,
        app,
        paths: frozenset[str],
        admit: Callable[[int], AbstractContextManager],
        on_refuse: Callable[[str, str], None] | None = None,
    ) -> None:
        self.app = app
        self.paths = paths
        self.admit = admit
        """Called as admit(images): a context manager that holds the request's place while
        it runs, or raises `Overloaded`."""
        self.on_refuse = on_refuse
        """Called as on_refuse(path, reason) for every refusal (the service counts them)."""

    async def __call__(self, scope, receive, send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or _route_path(scope) not in self.paths
        ):
            await self.app(scope, receive, send)
            return
        try:
            admission = self.admit(1)  # every request holds at least one image
        except Overloaded as err:
            if self.on_refuse is not None:
                self.on_refuse(scope["path"], err.reason)
            await asyncio.sleep(err.hold_s)
            body = {"error": err.message, "reason": err.reason}
            retry = [(b"retry-after", str(err.retry_after_s).encode())]
            await send_json(send, err.http_status, body, retry)
            return
        with admission:
            await self.app(scope, receive, send)


class RequestGuard:
    def __init__(
        self,
        app,
        routes: dict[str, UploadRoute],
        max_body_bytes: int,
        on_refuse: Callable[[str, str], None] | None = None,
    ) -> None:
        self.app = app
        self.routes = routes
        self.max_body_bytes = max_body_bytes
        self.on_refuse = on_refuse
        """Called as on_refuse(path, reason) for every refusal (the service counts them)."""

    def _refused(self, scope, reason: str) -> None:
        if self.on_refuse is not None:
            self.on_refuse(scope["path"], reason)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        route = self.routes.get(_route_path(scope))
        limit = route.max_bytes if route else self.max_body_bytes
        try:
            self._check_length(scope, limit)
            if route is None:
                await self.app(scope, receive, send)  # BentoML's own routes, any type
                return
            boundary = self._boundary(scope, route)
            body = await self._read(receive, limit)
            if body is None:
                return  # the client went away
            check_multipart(body, boundary, route)
        except Refusal as err:
            self._refused(scope, err.reason)
            await send_json(send, err.status, {"error": err.message, "reason": err.reason})
            return

        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    def _check_length(scope, limit: int) -> None:
        declared = _header(scope, b"content-length")
        if declared is None:
            return
        try:
            size = int(declared)
        except ValueError:
            raise Refusal(400, "bad_request", "Content-Length is not a number") from None
        if size > limit:
            raise Refusal(
                413,
                "upload_too_large",
                f"the request body is {size} bytes; the limit here is {limit}",
            )

    @staticmethod
    def _boundary(scope, route: UploadRoute) -> bytes:
        ctype, options = parse_options_header(_header(scope, b"content-type") or b"")
        if ctype != b"multipart/form-data":
            shown = ctype.decode("latin-1") or "none"
            raise Refusal(
                415,
                "wrong_content_type",
                f"content type {shown} is not accepted; send multipart/form-data with the "
                f"image file(s) in field '{route.field}'",
            )
        boundary = options.get(b"boundary")
        if not boundary:
            raise Refusal(400, "bad_multipart", "multipart/form-data without a boundary")
        return boundary

    @staticmethod
    async def _read(receive, limit: int) -> bytes | None:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise Refusal(
                    413, "upload_too_large", f"the request body is over the limit of {limit} bytes"
                )
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)
