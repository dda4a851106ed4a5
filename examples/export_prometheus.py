"""loop.stats() and stall reports in Prometheus' text exposition format.

`prometheus_text(loop)` needs nothing but ferroloop; with `prometheus_client` installed,
`register(loop)` adds the same numbers to its default registry (an optional import).

python examples/export_prometheus.py   # prints one scrape after a short stall
"""

from __future__ import annotations

import asyncio
import threading
import time

import ferroloop

# (name, type, help, value of the stats snapshot)
_METRICS = [
    ("iterations", "counter", "Run loop iterations", lambda s: s.iterations),
    ("callbacks", "counter", "Callbacks run", lambda s: s.callbacks),
    ("timers_fired", "counter", "Timers that fired", lambda s: s.timers_fired),
    ("timers_cancelled", "counter", "Timers cancelled", lambda s: s.timers_cancelled),
    ("io_events", "counter", "Poller readiness events", lambda s: s.io_events),
    ("read_bytes", "counter", "Bytes read by transports", lambda s: s.bytes_read),
    ("written_bytes", "counter", "Bytes written by transports", lambda s: s.bytes_written),
    ("poll_seconds", "counter", "Time waiting in the poller", lambda s: s.poll_time),
    ("callback_seconds", "counter", "Time running callbacks", lambda s: s.callback_time),
    ("ready_handles", "gauge", "Handles in the ready queue", lambda s: s.ready),
    ("lag_p50_seconds", "gauge", "call_soon-to-run lag, median", lambda s: s.lag.p50),
    ("lag_p99_seconds", "gauge", "call_soon-to-run lag, 99th percentile", lambda s: s.lag.p99),
    ("lag_max_seconds", "gauge", "call_soon-to-run lag, maximum", lambda s: s.lag.max),
]


class StallCounter:
    """A stall handler that counts stalls and their total length (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count = 0
        self.seconds = 0.0

    def __call__(self, report: ferroloop.StallReport) -> None:
        if report.ended:
            with self.lock:
                self.count += 1
                self.seconds += report.duration
            ferroloop.log_stall(report)


def prometheus_text(loop, stalls: StallCounter | None = None, prefix="ferroloop_loop_") -> str:
    """One scrape: every counter of `loop.stats()`, open transports, stalls."""
    stats = loop.stats()
    lines = []
    for name, kind, help_text, value in _METRICS:
        suffix = "_total" if kind == "counter" and not name.endswith("seconds") else ""
        full = prefix + name + suffix
        lines += [f"# HELP {full} {help_text}", f"# TYPE {full} {kind}", f"{full} {value(stats)}"]
    lines += [f"# HELP {prefix}transports Open transports", f"# TYPE {prefix}transports gauge"]
    lines += [f'{prefix}transports{{kind="{k}"}} {v}' for k, v in stats.transports.items()]
    if stalls is not None:
        with stalls.lock:
            count, seconds = stalls.count, stalls.seconds
        lines += [f"# TYPE {prefix}stalls_total counter", f"{prefix}stalls_total {count}"]
        lines += [f"# TYPE {prefix}stall_seconds counter", f"{prefix}stall_seconds {seconds}"]
    return "\n".join(lines) + "\n"


def register(loop, stalls: StallCounter | None = None) -> bool:
    """Adds the loop's numbers to prometheus_client's default registry, if installed."""
    try:
        from prometheus_client import REGISTRY
        from prometheus_client.core import GaugeMetricFamily
    except ImportError:
        return False

    class LoopCollector:
        def collect(self):
            stats = loop.stats()
            for name, _kind, help_text, value in _METRICS:
                yield GaugeMetricFamily(f"ferroloop_loop_{name}", help_text, value=value(stats))
            if stalls is not None:
                yield GaugeMetricFamily("ferroloop_loop_stalls", "Stalls", value=stalls.count)

    REGISTRY.register(LoopCollector())
    return True


async def main() -> None:
    loop = asyncio.get_running_loop()
    stalls = StallCounter()
    loop.set_stall_handler(0.05, stalls)
    loop.call_soon(time.sleep, 0.1)  # one stall
    await asyncio.sleep(0.3)
    print(prometheus_text(loop, stalls), end="")


if __name__ == "__main__":
    ferroloop.run(main())
