"""How hard the simulated Exchange Online pushes back: per-cmdlet latency, a per-tenant concurrency cap, a request
budget with `Rate-Limit-*` headers, a creation quota and the `$batch` endpoint (what a first load meets in Exchange
Online).

    ExchangeProfile()                        # the default: everything off, answers at once (fast suite and demo)
    ExchangeProfile.realistic()              # the switch the benchmark uses; scale=0.1 → a tenth of real latency
    SimCloud.start(exchange_profile=...)     # every tenant's organisation gets its own `ExchangeLimits`
    CTCS_SIM_EXCHANGE_PROFILE=realistic      # the same switch from the environment (SimCloud reads it)
    tenant.exchange.limits.configure(concurrency_cap=3, creation_quota=5, quota_cooldown=2.0)   # one tenant

What each part does, as the real service does it:
- latency: every cmdlet takes `latency[cmdlet]` seconds (`"*"` for the others), ± `latency_jitter` (seeded). The
  handler sleeps without holding the organisation's lock, so concurrent calls overlap as they do in Exchange.
- concurrency cap: more than `concurrency_cap` calls in flight for one tenant → HTTP 429 with the plain-text body
  "You have reached the maximum number of concurrent requests per tenant..." and, like Exchange often does, no
  Retry-After unless `concurrency_retry_after` is set.
- budget: `budget` calls per `budget_window` seconds (a fixed window); every answer carries `Rate-Limit-Limit`,
  `Rate-Limit-Remaining` and `Rate-Limit-Reset`: by default the absolute ISO-8601 time the window renews
  (`2024-05-22T16:52:26.365Z`, the form seen live; `rate_limit_reset_format="seconds"` sends seconds until then);
  a call beyond it gets 429 with `Retry-After` = the seconds left in the window.
- concurrency headers (`concurrency_headers`, on by default): every answer carries `X-Concurrencycount` (this
  app's calls in flight at the tenant, the answered one included) and `X-Combinedapponlyconcurrencycount` (every
  app-only caller's, `foreign_in_flight` calls of other apps included: they also count against the cap).
- error envelopes (`error_envelope`): "classic" (`error.message` "Error executing cmdlet"), "invalid_operation"
  (`error.message` "Invalid Operation", `details[0]` `{"code": "Client", "message": "|Type|text"}` and the
  innererror), or "mixed" (the default: each failure draws one, seeded, as answers seen live vary).
  `forbidden_body` is "nul" (the default: a 403 body of NUL bytes, as seen live) or "json".
- creation quota: after `creation_quota` new mail contacts (± `quota_jitter`, seeded: the real limit is dynamic),
  New-MailContact fails with HTTP 400 `RecipientUsageExceededRecentQuotaException` until `quota_cooldown` seconds
  after the quota was reached; then the count starts again.
- `$batch`: on when `batch` is True; sub-requests are limited, counted and delayed one by one like single calls.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import os
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

PROFILE_VARIABLE = "CTCS_SIM_EXCHANGE_PROFILE"
NOMINAL_BUDGET = 10_000  # what Rate-Limit-Limit says when no budget is simulated
ENVELOPES = ("classic", "invalid_operation")
CHOICES = {"rate_limit_reset_format": ("iso", "seconds"), "error_envelope": (*ENVELOPES, "mixed"),
           "forbidden_body": ("nul", "json")}


@dataclass(frozen=True)
class ExchangeProfile:
    """One tenant's limits; zero means "no limit"."""

    latency: Mapping[str, float] = field(default_factory=dict)  # seconds per cmdlet; "*" for any other
    latency_jitter: float = 0.0  # uniform ± this fraction of the latency
    concurrency_cap: int = 0
    concurrency_retry_after: str | None = None  # Retry-After on the concurrency 429 (None: no header)
    budget: int = 0  # calls per budget_window
    budget_window: float = 60.0
    creation_quota: int = 0  # new mail contacts before the quota answers
    quota_cooldown: float = 3600.0  # seconds from reaching the quota until it frees
    quota_jitter: float = 0.0  # ± this fraction of creation_quota, drawn per window
    batch: bool = True  # the `$batch` endpoint accepts requests
    rate_limit_reset_format: str = "iso"  # "iso": an absolute time, as Exchange Online sends it; "seconds"
    concurrency_headers: bool = True  # X-Concurrencycount and X-Combinedapponlyconcurrencycount on every answer
    foreign_in_flight: int = 0  # calls of other apps in flight at the tenant (count against the cap)
    error_envelope: str = "mixed"  # "classic" | "invalid_operation" | "mixed" (seeded draw per failure)
    forbidden_body: str = "nul"  # a 403's body: "nul" (NUL bytes, as seen live) or "json"
    seed: int = 0

    def __post_init__(self) -> None:
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"ExchangeProfile.{name} must be one of {', '.join(allowed)}, not {getattr(self, name)!r}")

    @classmethod
    def realistic(cls, *, scale: float = 0.1, seed: int = 0) -> ExchangeProfile:
        """Exchange Online as a first load meets it, with every duration multiplied by `scale`.

        Latencies are those seen on the admin API (hundreds of milliseconds to over a second; New-MailContact is
        among the slow ones); the concurrency cap is the ~10 per tenant community reports give; the budget is
        set above what that cap lets through, so it shows in headers without being what limits a load; the
        creation quota is the ~600 contacts admins report before the import stops, freeing after an hour.
        """
        real = {"Get-Recipient": 0.6, "Get-MailContact": 0.6, "New-MailContact": 1.2, "Set-MailContact": 0.8,
                "Set-Contact": 0.8, "Remove-MailContact": 0.8, "*": 0.6}
        return cls(
            latency={cmdlet: seconds * scale for cmdlet, seconds in real.items()}, latency_jitter=0.2,
            concurrency_cap=10, budget=60_000, budget_window=600.0 * scale, creation_quota=600,
            quota_cooldown=3600.0 * scale, quota_jitter=0.1, batch=True, seed=seed,
        )

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> ExchangeProfile:
        """`CTCS_SIM_EXCHANGE_PROFILE`: unset or `fast` → the default; `realistic` or `realistic:<scale>`."""
        value = (os.environ if environ is None else environ).get(PROFILE_VARIABLE, "").strip().lower()
        if value in ("", "fast"):
            return cls()
        name, _, scale = value.partition(":")
        if name != "realistic":
            raise ValueError(f"{PROFILE_VARIABLE} must be 'fast' or 'realistic[:scale]', not {value!r}")
        return cls.realistic(scale=float(scale)) if scale else cls.realistic()


@dataclass
class LimitStats:
    """What the limits did, for tests and the benchmark."""

    peak_in_flight: int = 0
    concurrency_rejections: int = 0
    budget_rejections: int = 0
    quota_refusals: int = 0
    creations: int = 0
    quota_windows: list[tuple[float, float]] = field(default_factory=list)  # (reached, freed) monotonic times


class ExchangeLimits:
    """One organisation's limits and their running state. Thread-safe (its own lock: the cloud's lock guards the
    recipients, and the handlers check limits before they take it)."""

    def __init__(self, profile: ExchangeProfile | None = None) -> None:
        self._lock = threading.Lock()
        self.profile = profile or ExchangeProfile()
        self.stats = LimitStats()
        self._rng = random.Random(self.profile.seed)
        self._envelope_rng = random.Random(f"envelope:{self.profile.seed}")  # apart: draws here move no latency
        self._in_flight = 0
        self._window_started = time.monotonic()
        self._window_calls = 0
        self._created = 0
        self._quota = self._draw_quota()
        self._blocked_until = 0.0

    def configure(self, **changes: Any) -> None:
        """Change some of the profile's values for this organisation (the running counts are kept)."""
        with self._lock:
            self.profile = dataclasses.replace(self.profile, **changes)
            if "seed" in changes:
                self._rng = random.Random(self.profile.seed)
                self._envelope_rng = random.Random(f"envelope:{self.profile.seed}")
            self._quota = self._draw_quota()

    # latency -----------------------------------------------------------------------------------------------------
    def latency(self, cmdlet: str) -> float:
        latency = self.profile.latency
        seconds = latency.get(cmdlet, latency.get("*", 0.0))
        if seconds <= 0:
            return 0.0
        with self._lock:
            jitter = self._rng.uniform(-1.0, 1.0) * self.profile.latency_jitter
        return max(0.0, seconds * (1.0 + jitter))

    # concurrency -------------------------------------------------------------------------------------------------
    def enter(self) -> bool:
        """Take a slot for one call; False when the tenant's concurrency cap is reached (answer 429)."""
        with self._lock:
            cap = self.profile.concurrency_cap
            if cap and self._in_flight + self.profile.foreign_in_flight >= cap:
                self.stats.concurrency_rejections += 1
                return False
            self._in_flight += 1
            self.stats.peak_in_flight = max(self.stats.peak_in_flight, self._in_flight)
            return True

    def leave(self) -> None:
        with self._lock:
            self._in_flight = max(0, self._in_flight - 1)

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    def concurrency_headers(self) -> dict[str, str]:
        """The concurrency headers of an answer, taken while the answered call still holds its slot (a refused
        call holds none); none when switched off."""
        if not self.profile.concurrency_headers:
            return {}
        with self._lock:
            own = self._in_flight
            combined = own + self.profile.foreign_in_flight
        return {"X-Concurrencycount": str(own), "X-Combinedapponlyconcurrencycount": str(combined)}

    # error shapes ------------------------------------------------------------------------------------------------
    def envelope(self) -> str:
        """The envelope of the next failed cmdlet: the profile's, or a seeded draw when it is "mixed"."""
        with self._lock:
            chosen = self.profile.error_envelope
            return self._envelope_rng.choice(ENVELOPES) if chosen == "mixed" else chosen

    # budget ------------------------------------------------------------------------------------------------------
    def spend(self) -> tuple[bool, dict[str, str]]:
        """Count one call against the budget: (allowed, the Rate-Limit-* headers to answer with)."""
        with self._lock:
            now = time.monotonic()
            window = self.profile.budget_window
            if now - self._window_started >= window:
                self._window_started, self._window_calls = now, 0
            reset = max(0.0, self._window_started + window - now)
            budget = self.profile.budget
            allowed = not budget or self._window_calls < budget
            if allowed:
                self._window_calls += 1
            else:
                self.stats.budget_rejections += 1
            limit = budget or NOMINAL_BUDGET
            remaining = max(0, limit - self._window_calls) if budget else limit - 1
            headers = {"Rate-Limit-Limit": str(limit), "Rate-Limit-Remaining": str(remaining),
                       "Rate-Limit-Reset": self._reset_text(reset)}
            if not allowed:
                headers["Retry-After"] = str(max(1, int(reset + 0.999)))
            return allowed, headers

    def _reset_text(self, seconds: float) -> str:
        if self.profile.rate_limit_reset_format == "seconds":
            return f"{seconds:.3f}".rstrip("0").rstrip(".") or "0"
        # Milliseconds rounded up, as the live form has them: a client that waits until then finds the window renewed.
        millis = math.ceil((time.time() + seconds) * 1000)
        moment = dt.datetime.fromtimestamp(millis // 1000, dt.UTC)
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{millis % 1000:03d}Z"

    # creation quota ----------------------------------------------------------------------------------------------
    def creation_allowed(self) -> bool:
        """False while the quota is spent (New-MailContact must fail); frees itself after the cooldown."""
        with self._lock:
            if not self.profile.creation_quota:
                return True
            now = time.monotonic()
            if self._blocked_until:
                if now < self._blocked_until:
                    self.stats.quota_refusals += 1
                    return False
                self.stats.quota_windows.append((self._blocked_until - self.profile.quota_cooldown, self._blocked_until))
                self._blocked_until, self._created = 0.0, 0
                self._quota = self._draw_quota()
            if self._created >= self._quota:
                self._blocked_until = now + self.profile.quota_cooldown
                self.stats.quota_refusals += 1
                return False
            return True

    def count_creation(self) -> None:
        with self._lock:
            self._created += 1
            self.stats.creations += 1

    def _draw_quota(self) -> int:
        quota = self.profile.creation_quota
        if not quota or not self.profile.quota_jitter:
            return quota
        spread = quota * self.profile.quota_jitter
        return max(1, round(quota + self._rng.uniform(-spread, spread)))
