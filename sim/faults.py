"""Fault injection and request counters shared by every simulated service.

Faults are rules; each incoming request asks `Faults.take(service, operation)` whether one applies. A rule fires for
the next `times` matching requests, or for a fraction `probability` of them (seeded RNG, so runs repeat), or both
(each matching request draws; at most `times` fire). Every fault served is counted in `RequestCounts` under
`"faults"`, `("faults", kind)` and `("faults", service, kind)`.

    cloud.faults.inject("graph", "throttle", times=2, retry_after="0.249")
    cloud.faults.inject("exchange", "server_busy", operation="New-MailContact", probability=0.2)
    cloud.faults.inject("graph", "delta_expired")            # next delta request: 400 syncStateNotFound
    cloud.faults.clear()

Kinds and who serves them:
    all services : throttle (429 + Retry-After), unavailable (503), gateway_timeout (504)
    exchange     : concurrency_limit (429, plain-text body), server_busy (400 ServerBusyException)
    graph        : delta_expired (400 syncStateNotFound), delta_reset (410 Gone + Location),
                   delta_garbled (400 syncStateInvalid), resync_required (400 resyncRequired),
                   batch_throttle (one sub-request of a JSON $batch answered 429 + Retry-After inside the 200
                   batch, as Graph throttles each request of a batch on its own; only $batch sub-requests take it)
    token        : token_failure (500 AADSTS50000-style temporarily_unavailable error)
    identity     : the managed-identity endpoint takes throttle/unavailable too
`operation` matches the Exchange cmdlet name, or a substring of the Graph/token path; None matches everything.
`retry_after`: a string/number sent verbatim, or None to omit the header.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Hashable, Iterator
from dataclasses import dataclass

SERVICES = ("graph", "exchange", "token", "identity")
KINDS = (
    "throttle",
    "unavailable",
    "gateway_timeout",
    "concurrency_limit",
    "server_busy",
    "delta_expired",
    "delta_reset",
    "delta_garbled",
    "resync_required",
    "token_failure",
    "batch_throttle",
)
# Kinds served to one sub-request of a batch, never to a whole request: only a caller that names them takes them.
SUB_REQUEST_KINDS = frozenset({"batch_throttle"})


class RequestCounts:
    """Thread-safe counters: `counts["graph"]`, `counts[("exchange", "New-MailContact")]`; missing keys read 0."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counter: Counter[Hashable] = Counter()

    def add(self, *keys: Hashable) -> None:
        with self._lock:
            for key in keys:
                self._counter[key] += 1

    def __getitem__(self, key: Hashable) -> int:
        with self._lock:
            return self._counter[key]

    def __iter__(self) -> Iterator[Hashable]:
        with self._lock:
            return iter(list(self._counter))

    def snapshot(self) -> dict[Hashable, int]:
        with self._lock:
            return dict(self._counter)

    def reset(self) -> None:
        with self._lock:
            self._counter.clear()

    def __repr__(self) -> str:
        return f"RequestCounts({self.snapshot()!r})"


@dataclass
class FaultRule:
    """One injected fault. `remaining` None = unlimited (only sensible with a probability)."""

    service: str
    kind: str
    operation: str | None
    remaining: int | None
    probability: float | None
    retry_after: str | None
    served: int = 0

    def matches(self, service: str, operation: str) -> bool:
        if self.service != service or self.remaining == 0:
            return False
        if self.operation is None:
            return True
        return self.operation.lower() == operation.lower() or self.operation.lower() in operation.lower()


class Faults:
    """The rule book every service consults; see the module docstring."""

    def __init__(self, counts: RequestCounts, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self._rng = random.Random(seed)
        self._counts = counts

    def seed(self, seed: int) -> None:
        with self._lock:
            self._rng = random.Random(seed)

    def inject(
        self,
        service: str,
        kind: str,
        *,
        operation: str | None = None,
        times: int | None = None,
        probability: float | None = None,
        retry_after: str | float | None = "0",
    ) -> FaultRule:
        """Add a rule. Without `times` and `probability` it fires once."""
        if service not in SERVICES:
            raise ValueError(f"unknown service {service!r}; expected one of {SERVICES}")
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {KINDS}")
        if times is None and probability is None:
            times = 1
        if probability is not None and not 0.0 <= probability <= 1.0:
            raise ValueError("probability must be within 0..1")
        rule = FaultRule(
            service, kind, operation, times, probability, None if retry_after is None else str(retry_after)
        )
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    @property
    def rules(self) -> list[FaultRule]:
        with self._lock:
            return list(self._rules)

    def take(self, service: str, operation: str, *, kinds: tuple[str, ...] | None = None) -> FaultRule | None:
        """The rule that fires for this request, if any (its budget is consumed and the fault counted)."""
        with self._lock:
            for rule in self._rules:
                if (rule.kind not in kinds) if kinds is not None else rule.kind in SUB_REQUEST_KINDS:
                    continue
                if not rule.matches(service, operation):
                    continue
                if rule.probability is not None and self._rng.random() >= rule.probability:
                    continue
                if rule.remaining is not None:
                    rule.remaining -= 1
                rule.served += 1
                self._counts.add("faults", ("faults", rule.kind), ("faults", service, rule.kind))
                return rule
        return None
