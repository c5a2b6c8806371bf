"""Decompose image files over gRPC from the command line, and print the HTTP API's JSON.

    python -m service.rpc.client scene.png            # one line per image
    python -m service.rpc.client a.png b.jpg --json   # {"results": [...]}: /decompose_batch
    python -m service.rpc.client --health --describe --target host:50051

One image goes as `Decompose`, several as one `DecomposeBatch` (one request, so the server's
image limit applies). `--describe` reads the server's API through server reflection (v1,
else v1alpha) and its model through `GetModel`. Errors are one line on stderr; the exit status
says which: 1 the server refused a request (or is not SERVING), 2 bad arguments or an
unreadable file, 3 no server answers at the target.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from service.rpc import reflection
from service.rpc.slotserve.v1 import slotserve_pb2 as pb
from service.rpc.slotserve.v1 import slotserve_pb2_grpc as pb_grpc

TIMINGS = ("decode", "preprocess", "inference", "postprocess", "total")
MAX_MESSAGE_BYTES = (
    64 * 1024 * 1024
)  # the server's default limit (SLOTSERVE_GRPC_MAX_MESSAGE_BYTES)
EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 1, 2, 3


class CliError(Exception):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(" ".join(message.split()))
        self.status = status


def to_result(msg: pb.Decomposition) -> dict:
    """A gRPC `Decomposition` as the HTTP API's JSON (an absent sub-message becomes None)."""
    return {
        "width": msg.width,
        "height": msg.height,
        "objects": [
            {
                "slot": o.slot,
                "code": o.code,
                "label": o.label if o.HasField("label") else None,
                "label_score": o.label_score if o.HasField("label_score") else None,
                "code_distance": o.code_distance,
                "area": o.area,
                "bbox": list(o.bbox),
                "mask": (
                    {"size": list(o.mask.size), "counts": o.mask.counts}
                    if o.HasField("mask")
                    else None
                ),
            }
            for o in msg.objects
        ],
        "model": (
            {"name": msg.model.name, "version": msg.model.version}
            if msg.HasField("model")
            else None
        ),
        "timings_ms": (
            {k: getattr(msg.timings_ms, k) for k in TIMINGS} if msg.HasField("timings_ms") else None
        ),
        "model_call": (
            {
                "id": msg.model_call.id,
                "images": msg.model_call.images,
                "compute_ms": msg.model_call.compute_ms,
            }
            if msg.HasField("model_call")
            else None
        ),
    }


def summary(name: str, result: dict) -> str:
    """One line for people: `scene.png 64x64: star #2 [30, 8, 17, 16], ...`."""
    objects = ", ".join(
        f"{o['label'] or 'code'} #{o['code']} {o['bbox']}" for o in result["objects"]
    )
    count = len(result["objects"])
    return f"{name} {result['width']}x{result['height']}: {count} objects: {objects}"


def read_images(paths: list[str]) -> list[bytes]:
    images = []
    for path in paths:
        try:
            images.append(Path(path).read_bytes())
        except OSError as err:
            raise CliError(f"cannot read {path}: {err.strerror or err}", EXIT_USAGE) from None
    return images


def connect(target: str, timeout: float) -> grpc.Channel:
    channel = grpc.insecure_channel(
        target,
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ],
    )
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout)
    except grpc.FutureTimeoutError:
        channel.close()
        raise CliError(
            f"no gRPC server answers at {target} (waited {timeout:g} s); "
            "is `bentoml serve` running, and is --target its gRPC port?",
            EXIT_UNREACHABLE,
        ) from None
    return channel


def refused(err: grpc.RpcError, what: str) -> CliError:
    """A failed call as one line. UNAVAILABLE means the server went away, unless it carries the
    retry pushback of a shed request (the server is there, overloaded: retry later)."""
    code = err.code()
    shed = any(k == "grpc-retry-pushback-ms" for k, _ in err.trailing_metadata() or ())
    gone = code == grpc.StatusCode.UNAVAILABLE and not shed
    return CliError(
        f"{what}: {code.name}: {err.details()}", EXIT_UNREACHABLE if gone else EXIT_REFUSED
    )


def decompose(channel: grpc.Channel, paths: list[str], images: list[bytes], timeout: float):
    stub = pb_grpc.SlotServeStub(channel)
    try:
        if len(images) == 1:
            return [
                to_result(stub.Decompose(pb.DecomposeRequest(image=images[0]), timeout=timeout))
            ]
        reply = stub.DecomposeBatch(pb.DecomposeBatchRequest(images=images), timeout=timeout)
        return [to_result(r) for r in reply.results]
    except grpc.RpcError as err:
        raise refused(err, "the server refused " + ", ".join(paths)) from None


def health(channel: grpc.Channel, timeout: float) -> str:
    request = health_pb2.HealthCheckRequest(service=pb.DESCRIPTOR.package + ".SlotServe")
    try:
        reply = health_pb2_grpc.HealthStub(channel).Check(request, timeout=timeout)
    except grpc.RpcError as err:
        raise refused(err, "health check failed") from None
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def _reflect(channel: grpc.Channel, service: str, timeout: float) -> dict:
    call = reflection.stub(channel, service)
    listed = next(
        iter(
            call(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=timeout)
        )
    )
    names = sorted(s.name for s in listed.list_services_response.service)
    requests = [reflection_pb2.ServerReflectionRequest(file_containing_symbol=n) for n in names]
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()
    for reply in call(iter(requests), timeout=timeout):
        # Each answer carries the file and everything it imports, the file itself first.
        for raw in reversed(reply.file_descriptor_response.file_descriptor_proto):
            proto = descriptor_pb2.FileDescriptorProto.FromString(raw)
            if proto.name not in added:
                pool.Add(proto)
                added.add(proto.name)
    services = {}
    for name in names:
        desc = pool.FindServiceByName(name)
        services[name] = {
            m.name: {
                "input": ("stream " if m.client_streaming else "") + m.input_type.full_name,
                "output": ("stream " if m.server_streaming else "") + m.output_type.full_name,
            }
            for m in desc.methods
        }
    return {"reflection": service.rsplit(".", 1)[0], "services": services}


def describe(channel: grpc.Channel, timeout: float) -> dict:
    """The server's API from reflection (v1, else v1alpha), and the model it serves."""
    for service in (reflection.V1, reflection.V1ALPHA):
        try:
            api = _reflect(channel, service, timeout)
            break
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.UNIMPLEMENTED or service == reflection.V1ALPHA:
                raise refused(err, "server reflection failed") from None
    try:
        info = pb_grpc.SlotServeStub(channel).GetModel(pb.GetModelRequest(), timeout=timeout)
    except grpc.RpcError as err:
        raise refused(err, "GetModel failed") from None
    manifest = json.loads(info.manifest_json)
    model = {
        "name": manifest.get("name"),
        "version": manifest.get("version"),
        "backend": info.backend,
        "provider": info.provider,
        "variant": info.variant,
    }
    return {**api, "model": model}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m service.rpc.client",
        description="Decompose images over gRPC and print the result as the HTTP API's JSON.",
    )
    parser.add_argument("images", nargs="*", metavar="IMAGE", help="PNG, JPEG or WebP files")
    parser.add_argument("--target", default="127.0.0.1:50051", help="gRPC host:port")
    parser.add_argument("--json", action="store_true", help="print the full JSON answer")
    parser.add_argument("--health", action="store_true", help="print the health status")
    parser.add_argument("--describe", action="store_true", help="print the API and the model")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per call")
    parser.add_argument(
        "--connect-timeout", type=float, default=5.0, help="seconds to wait for the server"
    )
    args = parser.parse_args(argv)
    if not (args.images or args.health or args.describe):
        parser.error("give at least one IMAGE, or --health or --describe")
    return args


def run(args: argparse.Namespace) -> int:
    images = read_images(args.images)  # before connecting: a typo fails at once
    channel = connect(args.target, args.connect_timeout)
    with channel:
        status = 0
        if args.health:
            serving = health(channel, args.timeout)
            print(json.dumps({"health": serving}))
            status = 0 if serving == "SERVING" else EXIT_REFUSED
        if args.describe:
            print(json.dumps(describe(channel, args.timeout), indent=2))
        if images:
            results = decompose(channel, args.images, images, args.timeout)
            if args.json:
                body = results[0] if len(results) == 1 else {"results": results}
                print(json.dumps(body, indent=2))
            else:
                for path, result in zip(args.images, results, strict=True):
                    print(summary(path, result))
    return status


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except CliError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.status
    except BrokenPipeError:  # `... | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's recipe
        return 0


if __name__ == "__main__":
    sys.exit(main())
