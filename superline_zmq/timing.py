"""Cluster timings as one frozen value with presets, instead of constants scattered over modules (pure).

Every timing the cluster layer uses lives in :class:`ClusterTiming`. Two presets cover the
usual cases, as memberlist's LAN and local configurations do:

- :meth:`ClusterTiming.lan` — the defaults for real deployments: a beat every second, a
  member silent for 5 s is dead, forgotten after 10 s.
- :meth:`ClusterTiming.local` — fast, for loopback tests and local clusters: a beat every
  0.2 s, dead after 1 s, forgotten after 2 s.

Failure detection takes between ``ttl`` and ``ttl + heartbeat_interval`` after a member's
last beat (also when a large cluster stretches beats to keep within ``beat_budget``: the
ticks that notice a silence stay at ``heartbeat_interval``); a partition that outlasted
``forget_after`` heals within about ``reprobe_max`` (plus a beat or two) of the links coming
back. Adapters, the CLI (``--timing local|lan``) and the testing kit take a ``timing=``;
the older ``heartbeat_interval=`` / ``ttl=`` keywords still work and override the preset
(:meth:`ClusterTiming.override`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any


def check_beat_budget(value: object) -> None:
    """Raise ``ValueError`` unless ``value`` is None or a positive, finite number of bytes per second."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"beat_budget must be a positive number of bytes per second or None, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class ClusterTiming:
    """How often members beat, when a silent one is dead and forgotten, and the adapters' waits.

    All values are seconds. Raises ``ValueError`` on construction if they are inconsistent
    (``0 < heartbeat_interval < ttl <= forget_after``, the rest positive).
    """

    #: Every member broadcasts a beat this often.
    heartbeat_interval: float = 1.0
    #: A member not heard from for this long is dead: out of routing and presence at once.
    ttl: float = 5.0
    #: A member silent this long is forgotten (disconnected, tombstoned); None: twice ``ttl``.
    forget_after: float | None = None
    #: ``subscribe`` (ZeroMQ) stops waiting for a silent member's confirmation after this.
    subscribe_timeout: float = 2.0
    #: ... and asks a silent member again this often meanwhile.
    subscribe_retry: float = 0.5
    #: ``close`` lets the leave and queued direct messages flush for this long.
    close_linger: float = 0.2
    #: Seeds and forgotten peers are probed again (to heal a partition) first after this ...
    reprobe_initial: float = 1.0
    #: ... then ever more rarely (doubling, jittered), but at least this often, forever.
    reprobe_max: float = 30.0
    #: Beats stretch (to every second tick, or more) once a node would make each member
    #: receive more than this many bytes of beats per second; None: beat every tick.
    #: Bytes per second, not seconds; the default keeps a 200-node mesh under 2 KiB/s.
    beat_budget: float | None = 2048.0

    def __post_init__(self) -> None:
        for name in (
            "heartbeat_interval",
            "ttl",
            "subscribe_timeout",
            "subscribe_retry",
            "close_linger",
            "reprobe_initial",
            "reprobe_max",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number of seconds, got {value!r}")
        if not 0 < self.heartbeat_interval < self.ttl:
            raise ValueError(
                f"need 0 < heartbeat_interval < ttl, got heartbeat_interval={self.heartbeat_interval} ttl={self.ttl}"
            )
        check_beat_budget(self.beat_budget)
        if self.forget_after is not None and not self.forget_after >= self.ttl:
            raise ValueError(f"forget_after ({self.forget_after}) must be at least ttl ({self.ttl})")
        if self.subscribe_timeout <= 0 or self.subscribe_retry <= 0:
            raise ValueError("subscribe_timeout and subscribe_retry must be positive")
        if self.close_linger < 0:
            raise ValueError(f"close_linger must be >= 0, got {self.close_linger}")
        if not 0 < self.reprobe_initial <= self.reprobe_max:
            raise ValueError(
                f"need 0 < reprobe_initial <= reprobe_max, got {self.reprobe_initial} and {self.reprobe_max}"
            )

    @classmethod
    def lan(cls) -> ClusterTiming:
        """The production defaults: beat 1 s, dead after 5 s, forgotten after 10 s, re-probed
        within 1 s to 30 s."""
        return cls()

    @classmethod
    def local(cls) -> ClusterTiming:
        """Fast timings for loopback tests and local clusters: beat 0.2 s, dead after 1 s,
        forgotten after 2 s, re-probed within 0.2 s to 2 s."""
        return cls(
            heartbeat_interval=0.2,
            ttl=1.0,
            subscribe_timeout=1.0,
            subscribe_retry=0.25,
            close_linger=0.1,
            reprobe_initial=0.2,
            reprobe_max=2.0,
        )

    @property
    def forget_time(self) -> float:
        """``forget_after`` resolved: how long a silent member is kept before it is forgotten."""
        return 2 * self.ttl if self.forget_after is None else self.forget_after

    def override(
        self,
        *,
        heartbeat_interval: float | None = None,
        ttl: float | None = None,
        forget_after: float | None = None,
    ) -> ClusterTiming:
        """This timing with the given values replaced (None: keep); the old keyword arguments use it."""
        changes: dict[str, Any] = {}
        if heartbeat_interval is not None:
            changes["heartbeat_interval"] = heartbeat_interval
        if ttl is not None:
            changes["ttl"] = ttl
        if forget_after is not None:
            changes["forget_after"] = forget_after
        return dataclasses.replace(self, **changes) if changes else self

    # ------------------------------------------------------------------ command lines
    def to_spec(self) -> str:
        """A command-line form :meth:`from_spec` reads back: a preset's name, or a JSON object."""
        for name, preset in PRESETS.items():
            if self == preset():
                return name
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"))

    @classmethod
    def from_spec(cls, spec: str) -> ClusterTiming:
        """``"lan"``, ``"local"``, or a JSON object of fields (the rest from ``lan``); ValueError if neither."""
        preset = PRESETS.get(spec)
        if preset is not None:
            return preset()
        try:
            fields = json.loads(spec)
        except ValueError:
            fields = None
        if not isinstance(fields, dict):
            raise ValueError(f"timing must be one of {', '.join(PRESETS)} or a JSON object, got {spec!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ValueError(f"unknown timing field(s) {unknown}; known: {sorted(known)}")
        return cls(**fields)


#: The named presets, for ``--timing NAME``.
PRESETS = {"lan": ClusterTiming.lan, "local": ClusterTiming.local}
