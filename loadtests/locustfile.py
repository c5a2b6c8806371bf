"""Locust users for SlotServe: HTTP and gRPC, every answer checked, SLOs set the exit code.

    locust -f loadtests/locustfile.py --headless -u 6 -r 3 -t 1m \\
        --host http://127.0.0.1:3000 --grpc-target 127.0.0.1:50051 \\
        HttpDecomposeUser GrpcDecomposeUser

Users (pick them by class name, as above; both run by default):
  HttpDecomposeUser  POST /decompose, and 1 time in 11 /decompose_batch with 4 images
  GrpcDecomposeUser  Decompose, and now and then DecomposeBatch / DecomposeStream of 4 images
Every answer must pass `loadtests.images.validate` (right size, objects, disjoint RLE masks
covering the image, boxes inside it, timings): a wrong or empty answer is a failure.

Options beside locust's own: --grpc-target (default: the --host's name, port 50051),
--image-seed, --retry-after (a refused user waits the Retry-After / gRPC retry pushback the
service asks for before its next request; without it, it goes on at its usual pace),
--slo-fail-ratio (default 0.01), --slo-p95-ms (default 2000), and --shape-*
(see loadtests/shapes.py). At the end one line says whether the SLOs held; the exit code is 1
when one broke (failure ratio or p95 over its limit, no requests at all), else 0.

SLOTSERVE_LOAD_SHAPE=ramp|steady|spike runs that load shape instead of -u / -r / -t.
"""

from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `locust -f loadtests/locustfile.py` puts only loadtests/ there
    sys.path.insert(0, str(REPO))

import gevent  # noqa: E402
import grpc  # noqa: E402
from locust import FastHttpUser, User, between, events, task  # noqa: E402
from locust.runners import MasterRunner, WorkerRunner  # noqa: E402

from loadtests import shapes  # noqa: E402
from loadtests.images import (  # noqa: E402
    TestImage,
    make_images,
    multipart,
    proto_to_result,
    validate,
    validate_batch,
)
from service.rpc.slotserve.v1 import slotserve_pb2 as pb  # noqa: E402
from service.rpc.slotserve.v1 import slotserve_pb2_grpc as pb_grpc  # noqa: E402

BATCH = 4
"""Images per batch (and stream) request."""
TIMEOUT_S = 60.0
DEFAULT_GRPC_PORT = 50051

if os.environ.get("SLOTSERVE_LOAD_SHAPE", "").strip():
    # locust runs the (one) shape class it finds in the locustfile: define only the chosen one
    LoadShape = shapes.shape_class(os.environ["SLOTSERVE_LOAD_SHAPE"])


class InvalidAnswer(Exception):
    """The service answered, but not with a correct decomposition."""


class GrpcStatus(Exception):
    """A gRPC call ended with a status other than OK."""


# -- options, images --------------------------------------------------------------------------
@events.init_command_line_parser.add_listener
def add_arguments(parser) -> None:
    parser.add_argument(
        "--grpc-target",
        default="",
        help="host:port of the gRPC API (default: the --host's name, port 50051)",
    )
    parser.add_argument(
        "--image-seed", type=int, default=0, help="seed of the generated test images (0)"
    )
    parser.add_argument(
        "--retry-after",
        action="store_true",
        default=False,
        help="after a 503 / UNAVAILABLE a user waits the Retry-After (gRPC: retry pushback) "
        "the service asks for before its next request",
    )
    parser.add_argument(
        "--slo-fail-ratio",
        type=float,
        default=0.01,
        help="SLO: largest failed fraction of requests (0.01); over it the exit code is 1",
    )
    parser.add_argument(
        "--slo-p95-ms",
        type=float,
        default=2000.0,
        help="SLO: largest p95 response time in ms over all requests (2000); over it exit 1",
    )
    shapes.add_arguments(parser)


def option(environment, name: str, default):
    value = getattr(environment.parsed_options, name, None)
    return default if value is None else value


def grpc_target(environment) -> str:
    """--grpc-target, else the name of --host with port 50051."""
    target = option(environment, "grpc_target", "")
    if target:
        return target
    host = urlsplit(environment.host or "").hostname or "localhost"
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{DEFAULT_GRPC_PORT}"


_images: dict[int, list[TestImage]] = {}


def load_images(environment) -> list[TestImage]:
    seed = option(environment, "image_seed", 0)
    if seed not in _images:
        _images[seed] = make_images(seed)
    return _images[seed]


@events.init.add_listener
def on_init(environment, **_kw) -> None:
    if isinstance(environment.runner, MasterRunner):
        return  # the master runs no users
    # gRPC's own threads would block gevent's loop: hand its I/O to gevent before any channel
    # exists (not at import, so importing this file leaves a process's gRPC alone).
    import grpc.experimental.gevent as grpc_gevent

    grpc_gevent.init_gevent()
    load_images(environment)  # generated once (importing torch: seconds), before users start
    # gevent's timers count from the loop's cached clock, stale after that blocking work: without
    # this, --run-time fires that many seconds early (a 4 s run made no requests at all)
    gevent.get_hub().loop.update_now()


# -- users ------------------------------------------------------------------------------------
PACE = between(0.05, 0.25)


class RefusalPacing:
    """The users' wait between tasks: their usual pace, plus what a refusal asked them to wait
    when --retry-after is on."""

    pause = 0.0

    def wait_time(self) -> float:
        pause, self.pause = self.pause, 0.0
        return pause + PACE(self)

    def refused(self, seconds: float) -> None:
        if option(self.environment, "retry_after", False):
            self.pause = max(self.pause, seconds)


MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}


def upload(field: str, items: list[TestImage]) -> tuple[bytes, str]:
    """The test images as files in `field`: (multipart body, content type)."""
    return multipart(field, [(i.name, i.data, MIME[i.format]) for i in items])


def http_reason(response, check) -> str | None:
    """Why an HTTP answer fails: its status (with the service's reason), bad JSON or `check`."""
    if response.status_code != 200:
        detail = ""
        try:
            payload = response.json()
            if isinstance(payload, dict):
                detail = f" {payload.get('reason')}: {payload.get('error')}"
        except Exception:
            detail = f" {(response.text or '')[:120]!r}" if response.status_code else ""
        error = getattr(response, "error", None)
        if not response.status_code and error:
            return f"no response: {error!r}"
        return f"HTTP {response.status_code}{detail}"
    try:
        payload = response.json()
    except Exception as err:
        return f"not JSON: {err}"
    return check(payload)


class HttpDecomposeUser(RefusalPacing, FastHttpUser):
    """POST /decompose (10 in 11) and /decompose_batch with 4 images (1 in 11)."""

    network_timeout = TIMEOUT_S
    connection_timeout = TIMEOUT_S

    def on_start(self) -> None:
        self.images = load_images(self.environment)
        self.rng = random.Random()
        self.bodies = {image.name: upload("image", [image]) for image in self.images}

    def _post(self, path: str, upload: tuple[bytes, str], check) -> None:
        """POST a ready upload; a wrong or empty answer (see `http_reason`) is a failure."""
        body, ctype = upload
        with self.client.post(
            path, data=body, headers={"Content-Type": ctype}, name=path, catch_response=True
        ) as response:
            reason = http_reason(response, check)
            if response.status_code == 503:
                self.refused(float(response.headers.get("Retry-After") or 0))
            if reason:
                response.failure(reason)
            else:
                response.success()

    @task(10)
    def decompose(self) -> None:
        image = self.rng.choice(self.images)

        def check(payload) -> str | None:
            reason = validate(payload, image.width, image.height)
            return reason and f"{image.name}: {reason}"

        self._post("/decompose", self.bodies[image.name], check)

    @task(1)
    def decompose_batch(self) -> None:
        batch = self.rng.sample(self.images, BATCH)
        self._post(
            "/decompose_batch",
            upload("images", batch),
            lambda r: validate_batch(r.get("results") if isinstance(r, dict) else r, batch),
        )


class GrpcDecomposeUser(RefusalPacing, User):
    """Decompose (10 in 12), DecomposeBatch and DecomposeStream of 4 images (1 in 12 each)."""

    def on_start(self) -> None:
        self.images = load_images(self.environment)
        self.rng = random.Random()
        self.target = grpc_target(self.environment)
        self.channel = grpc.insecure_channel(
            self.target, options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)]
        )
        self.stub = pb_grpc.SlotServeStub(self.channel)

    def on_stop(self) -> None:
        self.channel.close()

    def call(self, name: str, send, check) -> None:
        """Time `send()`, check its reply with `check`, report one request to locust."""
        start_time = time.time()
        started = time.perf_counter()
        length, exception = 0, None
        try:
            reply = send()
            response_time = 1000 * (time.perf_counter() - started)
            length = sum(r.ByteSize() for r in (reply if isinstance(reply, list) else [reply]))
            reason = check(reply)
            if reason:
                exception = InvalidAnswer(reason)
        except grpc.RpcError as err:
            response_time = 1000 * (time.perf_counter() - started)
            exception = GrpcStatus(f"{err.code().name}: {err.details()}")
            if err.code() == grpc.StatusCode.UNAVAILABLE:
                pushback = dict(err.trailing_metadata() or ()).get("grpc-retry-pushback-ms", 0)
                self.refused(int(pushback) / 1000)
        self.environment.events.request.fire(
            request_type="grpc",
            name=name,
            response_time=response_time,
            response_length=length,
            response=None,
            context={},
            exception=exception,
            start_time=start_time,
            url=f"grpc://{self.target}/slotserve.v1.SlotServe/{name}",
        )

    @task(10)
    def decompose(self) -> None:
        image = self.rng.choice(self.images)

        def check(reply):
            reason = validate(proto_to_result(reply), image.width, image.height)
            return reason and f"{image.name}: {reason}"

        self.call(
            "Decompose",
            lambda: self.stub.Decompose(pb.DecomposeRequest(image=image.data), timeout=TIMEOUT_S),
            check,
        )

    @task(1)
    def decompose_batch(self) -> None:
        batch = self.rng.sample(self.images, BATCH)
        request = pb.DecomposeBatchRequest(images=[image.data for image in batch])
        self.call(
            "DecomposeBatch",
            lambda: self.stub.DecomposeBatch(request, timeout=TIMEOUT_S),
            lambda reply: validate_batch([proto_to_result(r) for r in reply.results], batch),
        )

    @task(1)
    def decompose_stream(self) -> None:
        batch = dict(zip((str(i) for i in range(BATCH)), self.rng.sample(self.images, BATCH)))
        requests = [pb.StreamRequest(id=key, image=image.data) for key, image in batch.items()]

        def check(replies: list) -> str | None:
            errors = [f"{r.id}: {r.error.reason}" for r in replies if r.HasField("error")]
            if errors:
                return f"stream errors: {errors}"
            ids = sorted(r.id for r in replies)
            if ids != sorted(batch):
                return f"stream answered ids {ids}, sent {sorted(batch)}"
            by_id = {r.id: proto_to_result(r.result) for r in replies}
            return validate_batch([by_id[key] for key in batch], list(batch.values()))

        self.call(
            "DecomposeStream",
            lambda: list(self.stub.DecomposeStream(iter(requests), timeout=TIMEOUT_S)),
            check,
        )


# -- SLOs -------------------------------------------------------------------------------------
def slo_verdict(total, max_fail_ratio: float, max_p95_ms: float) -> str | None:
    """Which SLO the aggregated stats `total` break (one line), or None when all hold."""
    if total.num_requests == 0:
        return "no requests were made"
    broken = []
    if total.fail_ratio > max_fail_ratio:
        broken.append(
            f"failure ratio {total.fail_ratio:.2%} ({total.num_failures} of "
            f"{total.num_requests}) > {max_fail_ratio:.2%}"
        )
    p95 = total.get_response_time_percentile(0.95)
    if p95 > max_p95_ms:
        broken.append(f"p95 {p95:.0f} ms > {max_p95_ms:g} ms")
    return "; ".join(broken) or None


@events.quitting.add_listener
def check_slos(environment, **_kw) -> None:
    """Exit code 1 when an SLO broke, else 0 (failures under the SLO ratio do not fail)."""
    if isinstance(environment.runner, WorkerRunner) or environment.parsed_options is None:
        return
    total = environment.stats.total
    max_fail_ratio = option(environment, "slo_fail_ratio", 0.01)
    max_p95_ms = option(environment, "slo_p95_ms", 2000.0)
    verdict = slo_verdict(total, max_fail_ratio, max_p95_ms)
    if verdict is None and environment.runner is not None and environment.runner.exceptions:
        count = sum(e["count"] for e in environment.runner.exceptions.values())
        verdict = f"{count} exception(s) in the load test's own code"
    if verdict:
        print(f"SLO broken: {verdict}", flush=True)
        environment.process_exit_code = 1
    else:
        print(
            f"SLOs met: failure ratio {total.fail_ratio:.2%} <= {max_fail_ratio:.2%}, "
            f"p95 {total.get_response_time_percentile(0.95):.0f} ms <= {max_p95_ms:g} ms "
            f"({total.num_requests} requests)",
            flush=True,
        )
        environment.process_exit_code = 0
