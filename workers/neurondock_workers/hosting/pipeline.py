"""One invocation pipeline — decode → predict → encode — for a request alone or for a batch of them.

The batcher and ``Handler.invoke`` both run requests through it, so a request's answer and error are
the same however it was executed. Each stage runs its hook at most once per request: a request's
``input_fn`` runs once, its decoded input is kept, and a failure becomes that request's answer
instead of a reason to start the request again (``docs/runtime.md``, "Batching").

``predict_batch`` runs one ``predict_fn`` over the concatenation of compatible requests. When that
fails (or its prediction does not split back on dim 0), what happens depends on whose ``predict_fn``
it was: the toolkit's default (``model(data)``) runs again for each request alone, from its
already-decoded input — no hook of the user's runs twice; a user's ``predict_fn`` (batched only when
the model opted in) is never run again: every request of the batch is answered with the failure.

Streaming (``docs/streaming.md``): a ``predict_fn`` that returns an iterator (a generator) has each item
encoded by ``output_fn`` as one part, and an ``output_fn`` that returns an iterator has each item sent
as one part; a TorchScript model's tuple or list of tensors is streamed element by element when the
request asked for a stream. A request that asked for one hands every part to its ``emit`` as soon as
it is encoded; any other gets the parts joined into one body.
"""

from __future__ import annotations

import dataclasses
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from neurondock_workers.hosting.contract import (
    ANY,
    CUSTOM_ATTRIBUTES_HEADER,
    OCTET_STREAM,
    UTF8_TYPES,
    Context,
    Failure,
    InputDecodeError,
    InvocationResult,
    base_type,
)

if TYPE_CHECKING:
    from neurondock_workers.hosting.handler import Handler

ERROR_CONTENT_TYPE = "text/plain; charset=utf-8"

# What output_fn returns for one whole answer (a tuple, not ``tuple | bytes | str``: that makes a union per call).
_NOT_STREAMED = (tuple, bytes, str)

# Receives one streamed part as soon as it is encoded: its bytes, content type and custom attributes.
Emit = Callable[[bytes, str, str | None], None]


@dataclass(slots=True)
class Invocation:
    """One request on its way through the pipeline: its context, then its decoded input or its failure."""

    body: bytes
    content_type: str
    accept: str
    context: Context
    started_ns: int = field(default_factory=time.perf_counter_ns)
    data: Any = None
    failure: Failure | None = None
    # Set when the request asked for a streamed answer.
    emit: Emit | None = None

    @property
    def batch_key(self) -> tuple[Any, ...] | None:
        """What requests must share to be concatenated on dim 0, or None when this one cannot be."""
        data = self.data
        if self.failure is not None or not isinstance(data, torch.Tensor):
            return None
        shape = data.shape
        return (data.dtype, shape[1:], data.device.type) if shape else None

    @property
    def rows(self) -> int:
        """The rows this request adds to a batch (dim 0 of its decoded tensor)."""
        return int(self.data.shape[0])


@dataclass(frozen=True)
class BatchOutcome:
    """A batched predict_fn: one prediction per request, or why there is none."""

    pieces: list[Any] | None
    failure: Failure | None = None


class Pipeline:
    """decode → predict → encode over one handler's hooks."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self._model_dir = str(handler.model_dir)

    @property
    def default_predict(self) -> bool:
        """Whether predict_fn is the toolkit's default, ``model(data)``, and so safe to run again."""
        return self.handler.user_predict_fn is None

    def begin(
        self,
        body: bytes,
        content_type: str | None,
        accept: str | None,
        custom_attributes: str | None,
        emit: Emit | None = None,
    ) -> Invocation:
        """Start one request: normalise its content type and accept, build its hooks' context."""
        content_type = content_type or OCTET_STREAM
        if not accept or accept.strip() == ANY:
            accept = self.handler.default_accept
        headers = {"Content-Type": content_type, "Accept": accept}
        if custom_attributes is not None:
            headers[CUSTOM_ATTRIBUTES_HEADER] = custom_attributes
        context = Context(model_dir=self._model_dir, request_headers=headers)
        return Invocation(body, content_type, accept, context, emit=emit)

    # --- one request -----------------------------------------------------------------------------

    def invoke(
        self,
        body: bytes,
        content_type: str | None = None,
        accept: str | None = None,
        custom_attributes: str | None = None,
        emit: Emit | None = None,
    ) -> InvocationResult:
        """Answer one request through the hooks (or the user's transform_fn); never raises."""
        invocation = self.begin(body, content_type, accept, custom_attributes, emit)
        if self.handler.user_transform_fn is not None:
            return self._transform(invocation)
        self.decode(invocation)
        return self.finish(invocation)

    def decode(self, invocation: Invocation) -> None:
        """Run input_fn once; the request keeps its decoded input, or its failure."""
        handler = self.handler
        try:
            invocation.data = handler.call("input_fn", _text(invocation), invocation.content_type, invocation.context)
        except Exception as exc:
            invocation.failure = Failure.of(exc, traceback.format_exc())

    def finish(self, invocation: Invocation) -> InvocationResult:
        """Predict one decoded request on its own and encode the answer (or answer its failure)."""
        if invocation.failure is not None:
            return self.failed(invocation, invocation.failure)
        try:
            prediction = self.handler.call("predict_fn", invocation.data, self.handler.model, invocation.context)
        except Exception as exc:
            return self.failed(invocation, Failure.of(exc, traceback.format_exc()))
        return self.encode(invocation, prediction)

    def encode(self, invocation: Invocation, prediction: Any) -> InvocationResult:
        """Run output_fn once on this request's prediction."""
        context = invocation.context
        try:
            # A tensor is neither an iterator nor a sequence of tensors: skip the ABC check (~1 µs).
            if not isinstance(prediction, torch.Tensor) and (
                isinstance(prediction, Iterator) or (invocation.emit is not None and _tensor_sequence(prediction))
            ):
                output_fn = self.handler.call
                return self._stream(
                    invocation, (output_fn("output_fn", item, invocation.accept, context) for item in prediction)
                )
            encoded = self.handler.call("output_fn", prediction, invocation.accept, context)
            if not isinstance(encoded, _NOT_STREAMED) and isinstance(encoded, Iterator):
                return self._stream(invocation, encoded)
            return self._answer(invocation, encoded)
        except Exception as exc:
            return self.failed(invocation, Failure.of(exc, traceback.format_exc()))

    def _stream(self, invocation: Invocation, items: Iterable[Any]) -> InvocationResult:
        """Encode each item as one part: emitted as it comes when asked for a stream, else joined."""
        emit = invocation.emit
        joined: list[bytes] = []
        first_type: str | None = None
        parts = 0
        try:
            for item in items:
                part = self._answer(invocation, item)
                first_type = first_type or part.content_type
                if emit is not None:
                    emit(part.body, first_type, part.custom_attributes)
                else:
                    joined.append(part.body)
                parts += 1
        except Exception as exc:
            result = self.failed(invocation, Failure.of(exc, traceback.format_exc()))
            if emit is None or not parts:
                return result
            # Parts went out already: the failure ends the stream instead of answering the request.
            return dataclasses.replace(result, body=b"", parts=parts)
        custom_attributes = invocation.context.response_headers.get(CUSTOM_ATTRIBUTES_HEADER)
        return InvocationResult(
            status=200,
            body=b"".join(joined),
            content_type=first_type or self._answer(invocation, b"").content_type,
            custom_attributes=custom_attributes,
            model_latency_us=_since(invocation.started_ns),
            parts=parts if emit is not None else 0,
        )

    def failed(self, invocation: Invocation, failure: Failure) -> InvocationResult:
        """Answer a request with its failure: its status and the error's type and message as the body.

        The traceback, with this host's paths, is for the replica log only (``replica.py`` writes it):
        the caller gets what SageMaker calls the OriginalMessage.
        """
        return InvocationResult(
            status=failure.status,
            body=failure.message.encode("utf-8", "replace"),
            content_type=ERROR_CONTENT_TYPE,
            message=failure.message,
            custom_attributes=invocation.context.response_headers.get(CUSTOM_ATTRIBUTES_HEADER),
            model_latency_us=_since(invocation.started_ns),
            failure=failure,
        )

    # --- a batch -------------------------------------------------------------------------------------

    def predict_batch(self, members: Sequence[Invocation]) -> BatchOutcome:
        """Run predict_fn once over the members' inputs concatenated on dim 0 and split the prediction back."""
        sizes = [m.rows for m in members]
        try:
            batch = torch.cat([m.data for m in members])
            prediction = self.handler.call("predict_fn", batch, self.handler.model, members[0].context)
        except Exception as exc:
            return BatchOutcome(None, Failure.of(exc, traceback.format_exc()))
        pieces = _split(prediction, sizes)
        if pieces is None:
            return BatchOutcome(None, None)
        return BatchOutcome(pieces)

    def unsplittable(self, sizes: Sequence[int]) -> Failure:
        """The failure of a batch whose prediction does not split back into its requests' rows."""
        return Failure(
            500,
            "BatchSplitError",
            f"predict_fn returned a prediction that does not split back into this batch's requests on dim 0 "
            f"(rows {list(sizes)}). A batched predict_fn must return tensors (or lists/dicts of them) with one "
            "row per input row; set NEURONDOCK_MAX_BATCH_SIZE=1 to run requests one at a time.",
            "",
        )

    # --- internals ---------------------------------------------------------------------------------

    def _transform(self, invocation: Invocation) -> InvocationResult:
        handler = self.handler
        try:
            result = handler.call(
                "transform_fn",
                handler.model,
                _text(invocation),
                invocation.content_type,
                invocation.accept,
                invocation.context,
            )
            if isinstance(result, Iterator):
                return self._stream(invocation, result)
            return self._answer(invocation, result)
        except Exception as exc:
            return self.failed(invocation, Failure.of(exc, traceback.format_exc()))

    def _answer(self, invocation: Invocation, encoded: Any) -> InvocationResult:
        context = invocation.context
        response_type = context.response_headers.get("Content-Type") or invocation.accept
        if isinstance(encoded, tuple):
            encoded, response_type = encoded[0], encoded[1] or response_type
        return InvocationResult(
            status=200,
            body=_to_bytes(encoded),
            content_type=str(response_type),
            custom_attributes=context.response_headers.get(CUSTOM_ATTRIBUTES_HEADER),
            model_latency_us=_since(invocation.started_ns),
        )


def _text(invocation: Invocation) -> bytes | str:
    # The toolkit hands JSON and CSV bodies to the hooks as str.
    if base_type(invocation.content_type) not in UTF8_TYPES:
        return invocation.body
    try:
        return invocation.body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputDecodeError(f"The request body is not valid UTF-8 {invocation.content_type}: {exc}") from exc


def _since(started_ns: int) -> int:
    return (time.perf_counter_ns() - started_ns) // 1000


def _to_bytes(body: Any) -> bytes:
    if isinstance(body, bytes):
        return body
    if isinstance(body, bytearray | memoryview):
        return bytes(body)
    if isinstance(body, str):
        return body.encode("utf-8")
    raise TypeError(
        f"output_fn/transform_fn must return bytes or str, or a (body, content_type) tuple; got {type(body).__name__}"
    )


def _tensor_sequence(prediction: Any) -> bool:
    """Whether a prediction is a tuple or list of tensors (a TorchScript model's frames, for instance)."""
    return (
        isinstance(prediction, tuple | list)
        and bool(prediction)
        and all(isinstance(item, torch.Tensor) for item in prediction)
    )


def _split(prediction: Any, sizes: Sequence[int]) -> list[Any] | None:
    """Split a batched prediction back into per-request pieces on dim 0; None when it cannot be."""
    rows = sum(sizes)
    if isinstance(prediction, torch.Tensor):
        if prediction.dim() == 0 or prediction.shape[0] != rows:
            return None
        # split_with_sizes is what torch.split calls for a list of sizes, without its Python wrapper.
        return list(prediction.split_with_sizes(list(sizes)))
    if isinstance(prediction, tuple | list) and prediction:
        parts = [_split(p, sizes) for p in prediction]
        if any(p is None for p in parts):
            return None
        return [type(prediction)(p[i] for p in parts if p is not None) for i in range(len(sizes))]
    if isinstance(prediction, dict) and prediction:
        split = {k: _split(v, sizes) for k, v in prediction.items()}
        if any(v is None for v in split.values()):
            return None
        return [{k: v[i] for k, v in split.items() if v is not None} for i in range(len(sizes))]
    return None
