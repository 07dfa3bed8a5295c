"""Pick a variant (weight or TargetVariant) and a replica (least outstanding), retrying on loss."""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from neurondock_platform.dataplane.client import ReplicaCaller, ReplicaUnavailable
from neurondock_platform.dataplane.routing import EndpointRoute, ReplicaRoute, RoutingTable, VariantRoute
from neurondock_platform.errors import RuntimeValidationError, ServiceUnavailable


@dataclass(frozen=True)
class RoutedAnswer:
    """A replica's answer and where it came from."""

    variant: str
    replica_id: int
    meta: dict[str, Any]
    body: bytes


class Router:
    """Routes one invocation to a replica, moving to another replica if the first one dies."""

    def __init__(self, table: RoutingTable, caller: ReplicaCaller, max_attempts: int = 3) -> None:
        self.table = table
        self.caller = caller
        self.max_attempts = max_attempts
        self.outstanding: dict[int, int] = defaultdict(int)
        self._rng = random.Random()

    def choose_variant(self, route: EndpointRoute, target_variant: str | None) -> VariantRoute:
        """TargetVariant wins; otherwise a weighted choice among variants that have replicas."""
        if target_variant:
            variant = route.variant(target_variant)
            if variant is None:
                raise RuntimeValidationError(
                    f"Variant {target_variant} not found for endpoint {route.name}. Variants: "
                    f"{', '.join(v.name for v in route.variants)}."
                )
            return variant
        candidates = [v for v in route.variants if v.replicas and v.weight > 0]
        if not candidates:
            candidates = [v for v in route.variants if v.replicas]
        if not candidates:
            raise ServiceUnavailable(f"Endpoint {route.name} has no replica ready to serve; retry shortly.")
        if len(candidates) == 1:
            return candidates[0]
        total = sum(v.weight for v in candidates)
        if total <= 0:
            return self._rng.choice(candidates)
        pick = self._rng.uniform(0, total)
        for v in candidates:
            pick -= v.weight
            if pick <= 0:
                return v
        return candidates[-1]

    def choose_replica(self, variant: VariantRoute, exclude: set[int]) -> ReplicaRoute | None:
        """Least outstanding requests, ties broken at random."""
        options = [r for r in variant.replicas if r.replica_id not in exclude]
        if not options:
            return None
        low = min(self.outstanding[r.replica_id] for r in options)
        best = [r for r in options if self.outstanding[r.replica_id] == low]
        return best[0] if len(best) == 1 else self._rng.choice(best)

    async def invoke(
        self,
        route: EndpointRoute,
        target_variant: str | None,
        meta: dict[str, Any],
        body: bytes,
        timeout: float,
    ) -> RoutedAnswer:
        """Send the request; a replica lost mid-flight is retried on another one."""
        tried: set[int] = set()
        last_error: Exception | None = None
        variant = self.choose_variant(route, target_variant)
        for _ in range(self.max_attempts):
            replica = self.choose_replica(variant, tried)
            if replica is None:
                # Pick up replacements the host agent may have started meanwhile.
                fresh = await self.table.get(route.account_id, route.name)
                fresh_variant = fresh.variant(variant.name) if fresh else None
                if fresh_variant is not None:
                    variant = fresh_variant
                    replica = self.choose_replica(variant, tried)
            if replica is None:
                break
            tried.add(replica.replica_id)
            self.outstanding[replica.replica_id] += 1
            try:
                answer_meta, answer_body = await self.caller.call(replica.address, meta, body, timeout)
            except ReplicaUnavailable as exc:
                last_error = exc
                self.table.invalidate_replica(replica.replica_id)
                continue
            finally:
                self.outstanding[replica.replica_id] -= 1
            return RoutedAnswer(variant.name, replica.replica_id, answer_meta, answer_body)
        raise ServiceUnavailable(
            f"No replica of variant {variant.name} of endpoint {route.name} could take the request"
            + (f" ({last_error})" if last_error else "")
            + "; retry shortly."
        )
