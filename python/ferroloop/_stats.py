"""`loop.stats()`: a snapshot of the counters the Rust loop keeps, always on."""

from __future__ import annotations

import dataclasses

_NS = 1e-9


@dataclasses.dataclass(frozen=True)
class LagStats:
    """How long callbacks waited between `call_soon` and running, in seconds.

    Measured on one `call_soon` in `sample_every` (so the clock is read for a few
    callbacks only); `samples` is how many were measured. Percentiles are within one
    histogram bucket (about 19%) of the truth; `max` and `mean` are exact over the samples.
    """

    samples: int
    sample_every: int
    p50: float
    p99: float
    max: float
    mean: float


@dataclasses.dataclass(frozen=True)
class LoopStats:
    """A snapshot of a loop's counters (`loop.stats()`); counts are since the loop was made."""

    iterations: int
    """Iterations of the run loop (one poll each)."""
    callbacks: int
    """Handles run (`call_soon`, timers, fd callbacks; cancelled ones not counted)."""
    call_soon: int
    """`call_soon`/`call_soon_threadsafe` calls."""
    timers_scheduled: int
    timers_fired: int
    timers_cancelled: int
    """Timers cancelled while scheduled."""
    io_events: int
    """Readiness events the poller reported for watched fds."""
    bytes_read: int
    """Bytes received by the loop's Rust transports (streams, TLS ciphertext, pipes, UDP)."""
    bytes_written: int
    transports: dict[str, int]
    """Open Rust transports by kind: stream, datagram, read_pipe, write_pipe."""
    ready: int
    """Handles in the ready queue now."""
    timers: int
    """Entries in the timer heap now (cancelled ones not yet dropped included)."""
    poll_time: float
    """Seconds spent waiting in the poller."""
    callback_time: float
    """Seconds spent outside the poller while running: callbacks and dispatch."""
    lag: LagStats


# A method of ferroloop.Loop (assigned in its class body).
def stats(self) -> LoopStats:
    """A snapshot of the loop's counters (cheap; may be called from any thread)."""
    raw = self._stats_core()
    samples = raw["lag_count"]
    lag = LagStats(
        samples=samples,
        sample_every=raw["lag_sample_every"],
        p50=raw["lag_p50_ns"] * _NS,
        p99=raw["lag_p99_ns"] * _NS,
        max=raw["lag_max_ns"] * _NS,
        mean=(raw["lag_sum_ns"] / samples * _NS) if samples else 0.0,
    )
    return LoopStats(
        iterations=raw["iterations"],
        callbacks=raw["callbacks"],
        call_soon=raw["call_soon"],
        timers_scheduled=raw["timers_scheduled"],
        timers_fired=raw["timers_fired"],
        timers_cancelled=raw["timers_cancelled"],
        io_events=raw["io_events"],
        bytes_read=raw["bytes_read"],
        bytes_written=raw["bytes_written"],
        transports=dict(raw["transports"]),
        ready=raw["ready"],
        timers=raw["timers"],
        poll_time=raw["poll_ns"] * _NS,
        callback_time=raw["busy_ns"] * _NS,
        lag=lag,
    )
