"""The Open Inference Protocol (KServe v2 REST) as a second front door to the same endpoints.

The protocol facts this relies on are in docs/oip.md. A "model" is an endpoint; a model *version*
is one of its variants: ``/v2/models/{endpoint}/infer`` follows the endpoint's variant weights like
InvokeEndpoint does, and ``/v2/models/{endpoint}/versions/{variant}/infer`` pins a variant like
TargetVariant (OIP itself has no traffic split). Responses name the variant that answered in
``model_version``.

Inference converts the one input tensor to an ``application/x-npy`` request for the replica (the
SageMaker handler contract takes one body) and the replica's NPY answer back to one output tensor.
Binary tensors (Triton's ``binary_tensor_data`` extension: ``Inference-Header-Content-Length`` and
``binary_data_size``) go straight from the request bytes into the NPY body and from the NPY answer
into the response without JSON; JSON ``data`` is accepted and returned too (at JSON's cost). Model
metadata and the input checks it allows live in ``dataplane/oip_metadata.py``.

Health, server metadata and model readiness without credentials (``/v2``, ``/v2/health/live|ready``,
``/v2/models/{m}/ready``) are open, as readiness probes must be, and say ready or not and nothing
more. Every other per-model call is authenticated like the runtime (SigV4 for service ``sagemaker``,
or ``Authorization: Bearer`` with an admin API token, through ``dataplane/auth.py``) and sees the
caller's account only. Errors are ``{"error": message}`` with KServe's statuses: 400 bad input, 401
or 403 auth, 404 unknown model or version, 429 full queues, 503 not ready, 500 model failure.
"""

from __future__ import annotations

import ast
import json
import logging
import math
import re
import struct
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from neurondock_platform.dataplane.auth import Principal
from neurondock_platform.dataplane.invocation_errors import FailedInvocation, InvocationTrace
from neurondock_platform.dataplane.oip_metadata import (
    NOT_DESCRIBED,
    MetadataError,
    Signature,
    SignatureCache,
)
from neurondock_platform.dataplane.protocol import OP_INVOKE
from neurondock_platform.dataplane.runtime import timing_headers
from neurondock_platform.errors import (
    AuthError,
    EndpointNotFoundError,
    ModelError,
    PayloadTooLarge,
    PlatformError,
    RuntimeValidationError,
    ServiceUnavailable,
)

if TYPE_CHECKING:
    from neurondock_platform.dataplane.routing import EndpointRoute, VariantRoute
    from neurondock_platform.dataplane.runtime import Receive, RuntimeApp, Scope, Send

log = logging.getLogger(__name__)

NPY = "application/x-npy"
HEADER_LENGTH = "inference-header-content-length"
EXTENSIONS = ["binary_tensor_data"]

_MODEL_RE = re.compile(r"^/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?(?P<op>/ready|/infer)?/?$")

# OIP datatype → (NPY descr, struct code, bytes per element). The platform has no NumPy: NPY
# headers and element packing are done by hand (the format is small: numpy's format.py).
DATATYPES: dict[str, tuple[str, str, int]] = {
    "BOOL": ("|b1", "?", 1),
    "UINT8": ("|u1", "B", 1),
    "UINT16": ("<u2", "H", 2),
    "UINT32": ("<u4", "I", 4),
    "UINT64": ("<u8", "Q", 8),
    "INT8": ("|i1", "b", 1),
    "INT16": ("<i2", "h", 2),
    "INT32": ("<i4", "i", 4),
    "INT64": ("<i8", "q", 8),
    "FP16": ("<f2", "e", 2),
    "FP32": ("<f4", "f", 4),
    "FP64": ("<f8", "d", 8),
}
_BY_KIND = {(descr[1], size): name for name, (descr, _, size) in DATATYPES.items()}


@dataclass(frozen=True)
class Tensor:
    """An NPY array's description and a view of its C-ordered data."""

    datatype: str
    shape: tuple[int, ...]
    data: memoryview
    # Byte order ("<" or ">") and the struct code; itemsize for BYTES (fixed-width S/U).
    order: str = "<"
    code: str = ""
    itemsize: int = 0
    kind: str = ""


def matches(path: str) -> bool:
    """Whether this front door serves the path."""
    return path == "/v2" or path.startswith("/v2/")


class OipError(Exception):
    """An OIP error response."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def npy_header(descr: str, shape: tuple[int, ...]) -> bytes:
    """An NPY v1.0 header for a C-ordered array (the raw data follows it)."""
    text = f"{{'descr': {descr!r}, 'fortran_order': False, 'shape': {shape!r}, }}"
    text += " " * ((64 - (10 + len(text) + 1) % 64) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin-1")


def _c_order(data: memoryview, shape: tuple[int, ...], itemsize: int) -> memoryview:
    # Reorder a Fortran-ordered buffer to C order, element by element (rare: transposed outputs).
    count = math.prod(shape)
    out = bytearray(count * itemsize)
    f_strides = [1]
    for dim in shape[:-1]:
        f_strides.append(f_strides[-1] * dim)
    for c_index in range(count):
        rem, f_index = c_index, 0
        for axis in range(len(shape) - 1, -1, -1):
            rem, i = divmod(rem, shape[axis])
            f_index += i * f_strides[axis]
        out[c_index * itemsize : (c_index + 1) * itemsize] = data[f_index * itemsize : (f_index + 1) * itemsize]
    return memoryview(bytes(out))


def parse_npy(body: bytes) -> Tensor:
    """Read an NPY answer's header and view its data, without copying and without pickle."""
    if body[:6] != b"\x93NUMPY" or len(body) < 10:
        raise OipError(500, "The model did not answer with an NPY array (Accept: application/x-npy).")
    if body[6] == 1:
        (length,) = struct.unpack_from("<H", body, 8)
        start = 10
    else:
        (length,) = struct.unpack_from("<I", body, 8)
        start = 12
    try:
        header = ast.literal_eval(body[start : start + length].decode("latin-1"))
        descr = str(header["descr"])
        shape = tuple(int(d) for d in header["shape"])
        fortran = bool(header["fortran_order"])
    except (ValueError, SyntaxError, KeyError, TypeError) as exc:
        raise OipError(500, f"The model's NPY answer has an unreadable header: {exc}") from exc
    order, kind, size = descr[0], descr[1:2], descr[2:]
    if order not in "<>|=" or not size.isdigit():
        raise OipError(500, f"The model answered with dtype {descr!r}, which has no Open Inference Protocol datatype.")
    itemsize = int(size) * (4 if kind == "U" else 1)
    data = memoryview(body)[start + length : start + length + math.prod(shape) * itemsize]
    if len(data) != math.prod(shape) * itemsize:
        raise OipError(500, "The model's NPY answer is shorter than its shape says.")
    if fortran and len(shape) > 1:
        data = _c_order(data, shape, itemsize)
    byte_order = ">" if order == ">" else "<"
    if kind in ("S", "U"):
        return Tensor("BYTES", shape, data, byte_order, "", itemsize, kind)
    name = _BY_KIND.get((kind, int(size)))
    if name is None:
        raise OipError(500, f"The model answered with dtype {descr!r}, which has no Open Inference Protocol datatype.")
    return Tensor(name, shape, data, byte_order, DATATYPES[name][1], int(size), kind)


def _bytes_elements(raw: memoryview, count: int) -> list[bytes]:
    out, offset = [], 0
    for _ in range(count):
        if offset + 4 > len(raw):
            raise OipError(400, "BYTES tensor data ends inside an element's 4-byte length.")
        (n,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        out.append(bytes(raw[offset : offset + n]))
        offset += n
    if offset != len(raw):
        raise OipError(400, "BYTES tensor data is longer than its elements.")
    return out


def _shape(value: Any, name: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value):
        raise OipError(400, f"Input {name!r}: shape must be a list of non-negative integers.")
    return tuple(value)


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    if not any(isinstance(v, list) for v in data):
        return data
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for value in stack[-1]:
            if isinstance(value, list):
                stack.append(iter(value))
                break
            out.append(value)
        else:
            stack.pop()
    return out


def input_to_npy(spec: dict[str, Any], binary: memoryview | None) -> bytes:
    """Build the NPY body for one OIP input; ``binary`` is its slice of the binary section, if any."""
    name = str(spec.get("name", ""))
    shape = _shape(spec.get("shape"), name)
    datatype = spec.get("datatype")
    count = math.prod(shape)
    if datatype == "BYTES":
        if binary is not None:
            items = _bytes_elements(binary, count)
        else:
            items = [v.encode() if isinstance(v, str) else bytes(v) for v in _flatten(spec.get("data", []))]
        if len(items) != count:
            raise OipError(400, f"Input {name!r}: {len(items)} elements for shape {list(shape)}.")
        width = max([len(i) for i in items] + [1])
        return npy_header(f"|S{width}", shape) + b"".join(i.ljust(width, b"\0") for i in items)
    if datatype not in DATATYPES:
        raise OipError(400, f"Input {name!r}: unsupported datatype {datatype!r}; use one of {', '.join(DATATYPES)}.")
    descr, code, itemsize = DATATYPES[datatype]
    if binary is not None:
        if len(binary) != count * itemsize:
            raise OipError(
                400,
                f"Input {name!r}: binary_data_size {len(binary)} does not match shape {list(shape)} of {datatype} "
                f"({count * itemsize} bytes).",
            )
        return npy_header(descr, shape) + binary
    if "data" not in spec:
        raise OipError(400, f"Input {name!r} has neither data nor a binary_data_size parameter.")
    flat = _flatten(spec["data"])
    if len(flat) != count:
        raise OipError(400, f"Input {name!r}: {len(flat)} values for shape {list(shape)}.")
    try:
        packed = struct.pack(f"<{count}{code}", *flat)
    except (struct.error, TypeError) as exc:
        raise OipError(400, f"Input {name!r}: data is not {datatype}: {exc}") from exc
    return npy_header(descr, shape) + packed


def _byte_strings(tensor: Tensor) -> list[bytes]:
    size, raw = tensor.itemsize, tensor.data
    count = math.prod(tensor.shape)
    if tensor.kind == "U":
        codec = "utf-32-be" if tensor.order == ">" else "utf-32-le"
        return [bytes(raw[i * size : (i + 1) * size]).decode(codec).rstrip("\0").encode() for i in range(count)]
    return [bytes(raw[i * size : (i + 1) * size]).rstrip(b"\0") for i in range(count)]


def output_json_data(tensor: Tensor) -> list[Any]:
    """The flat JSON ``data`` of an output tensor."""
    if tensor.datatype == "BYTES":
        return [b.decode("utf-8", "replace") for b in _byte_strings(tensor)]
    return list(struct.unpack_from(f"{tensor.order}{math.prod(tensor.shape)}{tensor.code}", tensor.data))


def output_binary(tensor: Tensor) -> bytes | memoryview:
    """The binary form of an output tensor: little-endian raw data, BYTES elements length-prefixed."""
    if tensor.datatype == "BYTES":
        return b"".join(struct.pack("<I", len(b)) + b for b in _byte_strings(tensor))
    if tensor.order == ">" and tensor.itemsize > 1:
        count = math.prod(tensor.shape)
        values = struct.unpack_from(f">{count}{tensor.code}", tensor.data)
        return struct.pack(f"<{count}{tensor.code}", *values)
    return tensor.data


class OipApp:
    """ASGI handler for ``/v2`` on top of the runtime's routing, router, auth and metrics."""

    def __init__(self, runtime: RuntimeApp, version: str = "0.1.0") -> None:
        self.runtime = runtime
        self.version = version
        self.signatures = SignatureCache(runtime.caller)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        trace = InvocationTrace()
        try:
            await self._handle(scope, receive, send, trace)
        except OipError as err:
            await _send_json(send, err.status, {"error": err.message})
            self._note_failure(trace, err.status, "OipError", err.message)
        except PlatformError as err:
            await _send_json(send, _status_of(err), {"error": err.message})
            self._note_failure(trace, _status_of(err), err.code, err.message)
        except Exception:
            log.exception("unexpected error on %s", scope.get("path"))
            await _send_json(send, 500, {"error": "An internal error occurred."})
            self._note_failure(trace, 500, "InternalFailure", "An internal error occurred.")

    def _note_failure(self, trace: InvocationTrace, status: int, code: str, message: str) -> None:
        """Keep a failed inference for its endpoint's error list, as the SageMaker front door does."""
        # ``endpoint_name`` is set only once an authenticated caller's infer request found its endpoint.
        if trace.endpoint_name is None or trace.account_id is None:
            return
        self.runtime.metrics.errors.record(
            FailedInvocation(
                account_id=trace.account_id,
                endpoint_name=trace.endpoint_name,
                variant_name=trace.variant_name,
                http_status=status,
                error_code=code,
                message=f"{message} (Open Inference Protocol)",
                request_id=f"oip-{uuid.uuid4()}",
                replica_id=trace.replica_id,
            )
        )

    async def _handle(self, scope: Scope, receive: Receive, send: Send, trace: InvocationTrace) -> None:
        started = time.perf_counter()
        path, method = scope["path"], scope["method"]
        if path in ("/v2", "/v2/"):
            self._method(method, "GET")
            await _send_json(send, 200, {"name": "neurondock", "version": self.version, "extensions": EXTENSIONS})
            return
        if path == "/v2/health/live":
            self._method(method, "GET")
            await _send_json(send, 200, {"live": True})
            return
        if path == "/v2/health/ready":
            self._method(method, "GET")
            ready = bool(getattr(self.runtime.table, "loaded", True))
            await _send_json(send, 200 if ready else 503, {"ready": ready})
            return
        m = _MODEL_RE.match(path)
        if m is None:
            raise OipError(404, f"No Open Inference Protocol route at {method} {path}.")
        name, version, op = m["name"], m["version"], m["op"] or ""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if op == "/ready" and "authorization" not in headers:
            # A readiness probe (KServe's, Kubernetes') carries no credentials: see _anonymous_ready.
            self._method(method, "GET")
            await self._anonymous_ready(name, version, send)
            return
        read = await self.runtime.read_body(receive, headers)
        principal = await self.runtime.authenticate(scope, headers, read)
        body = read.data
        route = await self.runtime.table.get(principal.account_id, name)
        if route is None:
            raise OipError(404, f"Model {name} not found: no endpoint {name} in account {principal.account_id}.")
        if version is not None and route.variant(version) is None:
            raise OipError(
                404,
                f"Version {version} of model {name} not found; versions are the endpoint's variants: "
                f"{', '.join(v.name for v in route.variants)}.",
            )
        if op == "/ready":
            self._method(method, "GET")
            ready = _ready(route, version)
            await _send_json(send, 200 if ready else 400, {"name": name, "ready": ready})
            return
        if op == "":
            self._method(method, "GET")
            await _send_json(send, 200, await self._model_metadata(principal, name, version))
            return
        self._method(method, "POST")
        trace.account_id, trace.endpoint_name = principal.account_id, name
        await self._infer(principal, name, version, headers, body, started, send, trace)

    async def _anonymous_ready(self, name: str, version: str | None, send: Send) -> None:
        """Model readiness for a caller without credentials: ready or not, and nothing more.

        Endpoint names are per account, so the answer is whether any account has a ready endpoint
        of that name (and variant); an unknown model and a model that is not ready answer the same.
        It reads the cached routing table only, so anonymous callers cannot make it query the database.
        """
        ready = any(_ready(route, version) for route in self.runtime.table.routes_named(name))
        await _send_json(send, 200 if ready else 400, {"name": name, "ready": ready})

    @staticmethod
    def _method(got: str, want: str) -> None:
        if got != want:
            raise OipError(405, f"Use {want} here, not {got}.")

    def _variant(self, route: EndpointRoute, version: str | None) -> VariantRoute:
        """The pinned variant, or one chosen by weight the way InvokeEndpoint chooses it."""
        variant = route.variant(version) if version else self.runtime.router.choose_variant(route, None)
        if variant is None:
            raise OipError(404, f"Version {version} of model {route.name} not found.")
        return variant

    async def _signature(self, variant: VariantRoute) -> Signature:
        try:
            return await self.signatures.of_variant(variant)
        except MetadataError as exc:
            raise OipError(exc.status, exc.message) from exc

    async def _model_metadata(self, principal: Principal, name: str, version: str | None) -> dict[str, Any]:
        route = await self.runtime.route(principal, name)
        variant = self._variant(route, version)
        signature = await self._signature(variant)
        return {
            "name": name,
            "versions": [v.name for v in route.variants],
            "platform": signature.platform,
            "inputs": [t.to_json() for t in signature.inputs],
            "outputs": [t.to_json() for t in signature.outputs],
            # Where the tensors come from (docs/oip.md, "Model metadata"), and which variant described them.
            "parameters": {"variant": variant.name, "signature": signature.source},
        }

    async def _infer(
        self,
        principal: Principal,
        name: str,
        version: str | None,
        headers: dict[str, str],
        body: bytes,
        started: float,
        send: Send,
        trace: InvocationTrace,
    ) -> None:
        header_len = headers.get(HEADER_LENGTH)
        if header_len is not None:
            if not header_len.isdigit() or int(header_len) > len(body):
                raise OipError(400, f"Inference-Header-Content-Length {header_len!r} does not fit the body.")
            split = int(header_len)
            header_bytes, binary = body[:split], memoryview(body)[split:]
        else:
            header_bytes, binary = body, memoryview(b"")
        try:
            doc = json.loads(header_bytes)
        except (ValueError, UnicodeDecodeError) as exc:
            raise OipError(400, f"The inference request is not JSON: {exc}") from exc
        if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list) or not doc["inputs"]:
            raise OipError(400, "The inference request needs an 'inputs' list with one tensor.")
        inputs = doc["inputs"]
        if len(inputs) != 1:
            raise OipError(
                400,
                f"This endpoint's handler takes one tensor per request (the SageMaker PyTorch contract); "
                f"got {len(inputs)} inputs.",
            )
        spec = inputs[0]
        if not isinstance(spec, dict):
            raise OipError(400, "Each input must be an object with name, shape, datatype and data.")
        size = (spec.get("parameters") or {}).get("binary_data_size")
        piece: memoryview | None = None
        if size is not None:
            if not isinstance(size, int) or size < 0 or size > len(binary):
                raise OipError(400, f"binary_data_size {size!r} of input {spec.get('name')!r} exceeds the body.")
            piece = binary[:size]
        npy = input_to_npy(spec, piece)
        requested = doc.get("outputs") or []
        if not isinstance(requested, list) or not all(isinstance(r, dict) for r in requested):
            raise OipError(400, "'outputs' must be a list of objects with a name.")
        runtime = self.runtime
        route = await runtime.route(principal, name)
        variant = self._variant(route, version)
        trace.variant_name = variant.name
        signature = self.signatures.cached(variant)
        if signature is None:
            try:
                signature = await self.signatures.of_variant(variant, ask=1)
            except MetadataError:
                # Describing the model is for checks only; the router has its own ways with a sick replica.
                signature = NOT_DESCRIBED
        datatype, shape = str(spec.get("datatype")), list(spec["shape"])
        where = f"Input {spec.get('name')!r} of model {name} (version {variant.name})"
        misfit = signature.misfit(datatype, shape)
        if misfit is not None and signature.enforced:
            # Shapes compiled for ml_inf1 are static: the runtime would refuse it (NRT_EXEC_BAD_INPUT); say so now.
            raise OipError(400, f"{where}: {misfit}.")
        out_name, out_params = self._output(requested, signature, name)
        meta = {"op": OP_INVOKE, "content_type": NPY, "accept": NPY, "custom_attributes": None, "inference_id": None}
        answer = await runtime.invoke(principal, route, variant.name, meta, npy, started, trace)
        status = int(answer.meta.get("status", 500))
        if status != 200:
            message = str(answer.meta.get("message") or "").splitlines()
            first = message[0] if message else ""
            if misfit is not None:
                # The model failed on a tensor unlike the one it answered before: the request's fault.
                raise OipError(400, f"{where}: {misfit}. The model failed with status {status}: {first}")
            raise OipError(400 if 400 <= status < 500 else 500, f"The model failed with status {status}: {first}")
        if not signature.known:
            self.signatures.answered(answer.replica_id)
        tensor = parse_npy(answer.body)
        want_binary = bool(out_params.get("binary_data", (doc.get("parameters") or {}).get("binary_data_output")))
        output: dict[str, Any] = {"name": out_name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
        response: dict[str, Any] = {"model_name": name, "model_version": answer.variant, "outputs": [output]}
        if "id" in doc:
            response["id"] = doc["id"]
        if want_binary:
            raw = output_binary(tensor)
            output["parameters"] = {"binary_data_size": len(raw)}
            head = json.dumps(response, separators=(",", ":")).encode()
            extra = [(b"inference-header-content-length", str(len(head)).encode()), *timing_headers(started, answer)]
            await _send(send, 200, b"application/octet-stream", [head, raw], extra)
        else:
            output["data"] = output_json_data(tensor)
            await _send_json(send, 200, response, timing_headers(started, answer))

    @staticmethod
    def _output(requested: list[dict[str, Any]], signature: Signature, name: str) -> tuple[str, dict[str, Any]]:
        """The one output's name and parameters; a requested output the model does not have is refused."""
        known = signature.output_names
        for item in requested:
            if item.get("name") not in known:
                raise OipError(
                    400,
                    f"Output {item.get('name')!r} is not an output of model {name}; its outputs: {', '.join(known)}.",
                )
        if len(requested) > 1:
            raise OipError(
                400, f"This front door answers with the model's one output tensor; {len(requested)} asked for."
            )
        if requested:
            return str(requested[0]["name"]), dict(requested[0].get("parameters") or {})
        return known[0], {}


def _ready(route: EndpointRoute, version: str | None) -> bool:
    """OIP model readiness: the endpoint serves and a variant that takes traffic (or the pinned one) has a replica."""
    variants = [route.variant(version)] if version else [v for v in route.variants if v.weight > 0]
    return route.servable and any(v is not None and v.replicas for v in variants)


def _status_of(err: PlatformError) -> int:
    if isinstance(err, AuthError):
        return err.http_status
    if isinstance(err, EndpointNotFoundError):
        return 404
    if isinstance(err, PayloadTooLarge):
        return 413
    if isinstance(err, ServiceUnavailable):
        return 503
    if isinstance(err, ModelError):
        return 500 if err.original_status_code == 0 or err.original_status_code >= 500 else 400
    if isinstance(err, RuntimeValidationError):
        # Not InService (Creating, Deleting ...): the model is not ready.
        return 503 if "cannot be invoked" in err.message else 400
    return err.http_status


async def _send(
    send: Send, status: int, content_type: bytes, parts: list[bytes | memoryview], extra: list[tuple[bytes, bytes]]
) -> None:
    length = sum(len(p) for p in parts)
    headers = [(b"content-type", content_type), (b"content-length", str(length).encode()), *extra]
    if status == 429:
        headers.append((b"retry-after", b"1"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"".join(parts)})


async def _send_json(
    send: Send, status: int, payload: dict[str, Any], extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = json.dumps(payload, separators=(",", ":")).encode()
    await _send(send, status, b"application/json", [body], extra or [])
