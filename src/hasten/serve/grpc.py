"""KServe v2 ``GRPCInferenceService`` front end on grpc.aio, with the protocol's published stubs
(from ``tritonclient.grpc``; no hand-written protobuf). It shares the event loop, the
`ModelServer` and its batchers with the HTTP front end."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from hasten.core import MissingDependencyError
from hasten.serve.batcher import InvalidInput, ServeError
from hasten.serve.server import ModelServer, server_timing
from hasten.serve.tensors import DATATYPES, InferRequest, array_wire_type, from_raw, to_raw

log = logging.getLogger(__name__)
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
_CONTENTS = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
             "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
             "UINT32": "uint_contents", "UINT64": "uint64_contents", "FP32": "fp32_contents",
             "FP64": "fp64_contents", "BYTES": "bytes_contents"}


def _modules() -> tuple[Any, Any, Any]:
    try:
        import grpc
        from tritonclient.grpc import service_pb2, service_pb2_grpc
    except ImportError as exc:
        raise MissingDependencyError("grpcio / tritonclient", "serve", "the gRPC endpoint") from exc
    return grpc, service_pb2, service_pb2_grpc


def _status(grpc: Any, exc: ServeError) -> Any:
    return {400: grpc.StatusCode.INVALID_ARGUMENT, 404: grpc.StatusCode.NOT_FOUND, 413: grpc.StatusCode.RESOURCE_EXHAUSTED,
            503: grpc.StatusCode.UNAVAILABLE}.get(exc.status, grpc.StatusCode.INTERNAL)


def make_service(server: ModelServer) -> Any:
    """A ``GRPCInferenceServiceServicer`` over ``server``."""
    grpc, pb, pb_grpc = _modules()
    from google.protobuf import json_format

    def guarded(method: Any) -> Any:
        async def call(self: Any, request: Any, context: Any) -> Any:
            try:
                return await method(self, request, context)
            except ServeError as exc:
                await context.abort(_status(grpc, exc), str(exc))
            except Exception as exc:  # noqa: BLE001 - the server never dies on a request
                log.exception("unexpected gRPC error")
                await context.abort(grpc.StatusCode.INTERNAL, str(exc))
        return call

    class Service(pb_grpc.GRPCInferenceServiceServicer):
        @guarded
        async def ServerLive(self, request: Any, context: Any) -> Any:  # noqa: N802 - protocol names
            return pb.ServerLiveResponse(live=True)

        @guarded
        async def ServerReady(self, request: Any, context: Any) -> Any:  # noqa: N802
            return pb.ServerReadyResponse(ready=server.ready)

        @guarded
        async def ModelReady(self, request: Any, context: Any) -> Any:  # noqa: N802
            server.get(request.name, request.version or None)
            return pb.ModelReadyResponse(ready=server.ready)

        @guarded
        async def ServerMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
            return json_format.ParseDict(server.server_metadata(), pb.ServerMetadataResponse())

        @guarded
        async def ModelMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
            return json_format.ParseDict(server.metadata(request.name, request.version or None),
                                         pb.ModelMetadataResponse())

        @guarded
        async def ModelConfig(self, request: Any, context: Any) -> Any:  # noqa: N802
            doc = server.config(request.name, request.version or None)
            return pb.ModelConfigResponse(config=json_format.ParseDict(doc, pb.ModelConfigResponse().config,
                                                                       ignore_unknown_fields=True))

        @guarded
        async def ModelStatistics(self, request: Any, context: Any) -> Any:  # noqa: N802
            doc = server.statistics(request.name or None, request.version or None)
            return json_format.ParseDict(doc, pb.ModelStatisticsResponse(), ignore_unknown_fields=True)

        @guarded
        async def RepositoryIndex(self, request: Any, context: Any) -> Any:  # noqa: N802
            return pb.RepositoryIndexResponse(models=[
                pb.RepositoryIndexResponse.ModelIndex(name=m.name, version=str(m.version),
                                                      state="READY" if server.ready else "UNAVAILABLE")
                for m in server.models.values()])

        @guarded
        async def ModelInfer(self, request: Any, context: Any) -> Any:  # noqa: N802
            t0 = time.perf_counter()
            req = _infer_request(request)
            t1 = time.perf_counter()
            server.in_flight += 1
            try:
                loaded, outputs, timings = await server.infer(request.model_name, request.model_version or None, req)
            finally:
                server.in_flight -= 1
            t2 = time.perf_counter()
            names = req.outputs if req.outputs is not None else list(outputs)
            response = pb.ModelInferResponse(model_name=loaded.name, model_version=str(loaded.version), id=request.id)
            for name in names:
                if name not in outputs:
                    raise InvalidInput(f"unknown output '{name}'", hint="outputs: " + ", ".join(outputs))
                array = outputs[name]
                response.outputs.add(name=name, datatype=array_wire_type(array), shape=list(array.shape))
                response.raw_output_contents.append(to_raw(array))
            t3 = time.perf_counter()
            context.set_trailing_metadata((("server-timing", server_timing(t1 - t0, timings, t3 - t2)),))
            if loaded.controller is not None:
                loaded.controller.observe(t3 - t0)
            return response

    return Service()


def _infer_request(request: Any) -> InferRequest:
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs",
                           hint="send raw contents for every input, or typed contents for all")
    inputs = {}
    for i, tensor in enumerate(request.inputs):
        where = f"input '{tensor.name}'"
        if tensor.datatype not in DATATYPES:
            raise InvalidInput(f"{where}: unknown datatype {tensor.datatype!r}")
        shape = tuple(int(d) for d in tensor.shape)
        if any(d < 0 for d in shape):
            raise InvalidInput(f"{where}: shape {list(shape)} has a negative dimension")
        if raw:
            inputs[tensor.name] = from_raw(raw[i], tensor.datatype, shape, where)
        else:
            values = list(getattr(tensor.contents, _CONTENTS.get(tensor.datatype, "fp32_contents")))
            count = int(np.prod(shape)) if shape else 1
            if tensor.datatype == "FP16" or len(values) != count:
                raise InvalidInput(f"{where}: {len(values)} typed values for shape {list(shape)}"
                                   + (" (FP16 travels only as raw_input_contents)" if tensor.datatype == "FP16" else ""))
            dtype = object if tensor.datatype == "BYTES" else DATATYPES[tensor.datatype]
            inputs[tensor.name] = np.array(values, dtype=dtype).reshape(shape)
    params = request.parameters
    priority = int(params["priority"].uint64_param or params["priority"].int64_param) if "priority" in params else 0
    timeout = (params["timeout"].int64_param or params["timeout"].uint64_param) if "timeout" in params else 0
    outputs = [o.name for o in request.outputs] or None
    return InferRequest(inputs, request.id or None, outputs, {}, True, priority, timeout / 1e6 if timeout else None)


async def start_grpc(server: ModelServer, host: str, port: int) -> Any:
    """A started grpc.aio server on ``host:port`` (raised message size limits); ``await
    .stop(grace)`` to stop it."""
    grpc, _, pb_grpc = _modules()
    options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
               ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]
    aio = grpc.aio.server(options=options)
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(make_service(server), aio)
    if aio.add_insecure_port(f"{host}:{port}") == 0:
        raise ServeError(f"cannot bind the gRPC port {host}:{port}", hint="choose another --grpc-port")
    await aio.start()
    return aio
