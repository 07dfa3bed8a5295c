"""OIP model metadata: what a variant's replicas say about their tensors, cached, and the checks it allows.

A replica answers the ``metadata`` frame (``neurondock_workers.hosting.signature``) with its model's
inputs and outputs and where it knows them from: a compiled artifact's manifest (``compiled``), an
uncompiled model's first successful NPY invocation (``observed``), or nothing yet (``unknown``).
Shapes compiled for ``ml_inf1`` are ``enforced`` by the emulated Neuron runtime, so an input that does
not fit them is refused here before it is sent; any other known signature only explains a model
failure as the client's fault when the request did not fit it (the model may take more than the one
sample or the compiled example showed). See docs/oip.md, "Model metadata" and "Errors".

A replica's answer changes only from ``unknown`` to ``observed``, so known answers are kept for the
life of the replica process (its channel key names it) and unknown ones for ``UNKNOWN_TTL`` seconds.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from neurondock_platform.dataplane.client import ReplicaCaller, ReplicaTimeout, ReplicaUnavailable
from neurondock_platform.dataplane.protocol import OP_METADATA
from neurondock_platform.dataplane.routing import ReplicaRoute, VariantRoute

COMPILED = "compiled"
OBSERVED = "observed"
UNKNOWN = "unknown"
# How long a replica that has not yet seen a successful NPY invocation is not asked again.
UNKNOWN_TTL = 1.0
METADATA_TIMEOUT = 10.0
MAX_ENTRIES = 4096
DEFAULT_OUTPUT = "output0"

# Dtype names (NumPy's and torch's, as replicas and compiled manifests write them) → OIP datatypes.
# BF16 is Triton's extension to the OIP set; BYTES stands for NumPy's fixed-width strings.
OIP_DATATYPES: Mapping[str, str] = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "bfloat16": "BF16",
    "float32": "FP32",
    "float64": "FP64",
    "bytes": "BYTES",
}


class MetadataError(Exception):
    """A replica could not describe its model (the caller answers 500 or 503)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class TensorSpec:
    """One input or output as OIP describes it: ``-1`` marks the dynamic batch dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def fits(self, datatype: str, shape: Sequence[int]) -> bool:
        """Whether a tensor of this datatype and shape matches the spec."""
        return (
            datatype == self.datatype
            and len(shape) == len(self.shape)
            and all(want in (-1, got) for want, got in zip(self.shape, shape, strict=True))
        )

    def describe(self) -> str:
        """E.g. ``input0 FP32 [-1, 16]``."""
        return f"{self.name} {self.datatype} {list(self.shape)}"

    def to_json(self) -> dict[str, Any]:
        """The OIP ``$metadata_tensor``."""
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class Signature:
    """A model's tensors as one replica described them."""

    platform: str
    source: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    # Whether the runtime refuses every input outside ``inputs`` (shapes compiled for ml_inf1).
    enforced: bool = False

    @property
    def known(self) -> bool:
        return self.source != UNKNOWN

    @property
    def output_names(self) -> tuple[str, ...]:
        """The outputs a request may ask for (the front door names the one answer ``output0`` when unknown)."""
        return tuple(o.name for o in self.outputs) or (DEFAULT_OUTPUT,)

    @classmethod
    def from_replica(cls, meta: Mapping[str, Any]) -> Signature:
        """Read a replica's ``metadata`` answer."""

        def tensors(items: Any) -> tuple[TensorSpec, ...]:
            out = []
            for item in items or []:
                dtype = str(item.get("dtype"))
                out.append(TensorSpec(str(item["name"]), OIP_DATATYPES.get(dtype, dtype.upper()), tuple(item["shape"])))
            return tuple(out)

        source = str(meta.get("signature") or UNKNOWN)
        return cls(
            str(meta.get("platform") or "pytorch"),
            source,
            tensors(meta.get("inputs")),
            tensors(meta.get("outputs")),
            enforced=bool(meta.get("enforced")),
        )

    def misfit(self, datatype: str, shape: Sequence[int]) -> str | None:
        """Say how a one-tensor request differs from the model's one input (None when it fits or is unknown)."""
        if not self.known or len(self.inputs) != 1 or self.inputs[0].fits(datatype, shape):
            return None
        expected = self.inputs[0]
        dims = " (dim 0 is the batch and may vary)" if expected.shape[:1] == (-1,) else ""
        return f"got {datatype} {list(shape)}; the model expects {expected.describe()}{dims}"


# What the front door assumes of a model no replica could describe: nothing.
NOT_DESCRIBED = Signature("pytorch", UNKNOWN, (), ())


class SignatureCache:
    """Per replica process: its model's signature, asked for once (unknown ones again after a second)."""

    def __init__(self, caller: ReplicaCaller, *, clock: Any = time.monotonic) -> None:
        self.caller = caller
        self.clock = clock
        self._entries: dict[tuple[int, str], tuple[float, Signature]] = {}

    @staticmethod
    def _key(replica: ReplicaRoute) -> tuple[int, str]:
        return replica.replica_id, replica.channel_key

    def cached(self, variant: VariantRoute) -> Signature | None:
        """A known signature of one of the variant's replicas, without asking any."""
        for replica in variant.replicas:
            hit = self._entries.get(self._key(replica))
            if hit is not None and hit[1].known:
                return hit[1]
        return None

    async def of_variant(self, variant: VariantRoute, *, ask: int | None = None) -> Signature:
        """The variant's signature: a known one if any replica knows it, else an unknown one.

        ``ask`` bounds how many replicas are asked (an inference asks one: it must not wait on a
        round of questions to every replica of a large instance). The answer is unknown only if
        every replica asked, now or within ``UNKNOWN_TTL``, said so.

        Raises:
            MetadataError: no replica could be asked.
        """
        found = self.cached(variant)
        if found is not None:
            return found
        if not variant.replicas:
            raise MetadataError(
                503, f"Variant {variant.name} has no ready replica to describe its model; retry shortly."
            )
        now = self.clock()
        unknown: Signature | None = None
        failure: MetadataError | None = None
        for replica in variant.replicas[:ask]:
            hit = self._entries.get(self._key(replica))
            if hit is not None and now - hit[0] < UNKNOWN_TTL:
                unknown = hit[1]
                continue
            try:
                signature = await self._ask(replica)
            except MetadataError as exc:
                failure = exc
                continue
            if signature.known:
                return signature
            unknown = signature
        if unknown is not None:
            return unknown
        assert failure is not None
        raise failure

    async def _ask(self, replica: ReplicaRoute) -> Signature:
        try:
            meta, _ = await self.caller.call(
                replica.address, {"op": OP_METADATA}, b"", METADATA_TIMEOUT, key=replica.channel_key
            )
        except (ReplicaUnavailable, ReplicaTimeout) as exc:
            raise MetadataError(503, f"The replica could not be asked to describe its model: {exc}") from exc
        if meta.get("status") != 200:
            raise MetadataError(500, f"The replica could not describe the model: {meta.get('message', '')}")
        signature = Signature.from_replica(meta)
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()  # replicas come and go; their entries are cheap to ask for again
        self._entries[self._key(replica)] = (self.clock(), signature)
        return signature

    def answered(self, replica_id: int) -> None:
        """Note a successful invocation: a replica that did not know its signature may know it now."""
        for key in [k for k, (_, s) in self._entries.items() if k[0] == replica_id and not s.known]:
            del self._entries[key]
