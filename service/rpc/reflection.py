"""gRPC server reflection under both names: `grpc.reflection.v1` and `grpc.reflection.v1alpha`.

grpcio-reflection (1.85) implements only v1alpha (native v1 for Python: grpc/grpc issue 38576),
while current reflection clients ask for v1 first. The two protocols differ only in their
package name: every message, field and number of `grpc/reflection/v1/reflection.proto` is the
same as in v1alpha, so the bytes on the wire are identical. We therefore serve v1 with
grpcio-reflection's own servicer, and register a v1 descriptor (v1alpha's, renamed) so that
reflection can describe the v1 service like any other.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

V1ALPHA = reflection.SERVICE_NAME  # grpc.reflection.v1alpha.ServerReflection
V1 = "grpc.reflection.v1.ServerReflection"
METHOD = "ServerReflectionInfo"


def v1_descriptor() -> descriptor_pb2.FileDescriptorProto:
    """`grpc/reflection/v1/reflection.proto`, built from v1alpha's by renaming its package."""
    proto = descriptor_pb2.FileDescriptorProto.FromString(reflection_pb2.DESCRIPTOR.serialized_pb)
    old, new = ".grpc.reflection.v1alpha.", ".grpc.reflection.v1."
    proto.name = "grpc/reflection/v1/reflection.proto"
    proto.package = "grpc.reflection.v1"
    proto.ClearField("options")
    for message in proto.message_type:
        for field in message.field:
            if field.HasField("type_name"):
                field.type_name = field.type_name.replace(old, new)
    for service in proto.service:
        for method in service.method:
            method.input_type = method.input_type.replace(old, new)
            method.output_type = method.output_type.replace(old, new)
    return proto


def _register_v1(pool: descriptor_pool.DescriptorPool) -> None:
    try:
        pool.FindServiceByName(V1)
    except KeyError:
        pool.Add(v1_descriptor())


def method_path(service: str) -> str:
    return f"/{service}/{METHOD}"


def enable(server: grpc.aio.Server, service_names: Iterable[str]) -> None:
    """Serve reflection over `service_names` plus both reflection services themselves."""
    pool = descriptor_pool.Default()
    _register_v1(pool)
    servicer = reflection.aio.ReflectionServicer((*service_names, V1, V1ALPHA), pool=pool)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)  # v1alpha
    v1 = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(V1, {METHOD: v1}),))


def stub(channel: grpc.Channel, service: str = V1) -> grpc.StreamStreamMultiCallable:
    """A client's `ServerReflectionInfo` call on `service` (V1 or V1ALPHA), with v1alpha's
    message classes for both (the same bytes on the wire)."""
    return channel.stream_stream(
        method_path(service),
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
