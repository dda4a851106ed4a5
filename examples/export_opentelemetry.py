"""loop.stats() as OpenTelemetry metrics and stall reports as OpenTelemetry log-like
events, with `opentelemetry-api` as an optional import (without it, this prints what it
would export).

python examples/export_opentelemetry.py
"""

from __future__ import annotations

import asyncio
import time

import ferroloop

try:
    from opentelemetry import metrics, trace
except ImportError:  # optional
    metrics = trace = None


def instrument(loop) -> None:
    """Observable instruments read `loop.stats()` when the SDK collects; every stall
    becomes an event on a span of its own, with the blocking stack as an attribute."""
    if metrics is None:
        return
    meter = metrics.get_meter("ferroloop")

    def observe(field):
        def callback(_options):
            yield metrics.Observation(field(loop.stats()))

        return [callback]

    meter.create_observable_counter(
        "ferroloop.loop.callbacks", observe(lambda s: s.callbacks), unit="{callback}"
    )
    meter.create_observable_counter(
        "ferroloop.loop.io.read", observe(lambda s: s.bytes_read), unit="By"
    )
    meter.create_observable_counter(
        "ferroloop.loop.io.written", observe(lambda s: s.bytes_written), unit="By"
    )
    meter.create_observable_gauge("ferroloop.loop.lag.p99", observe(lambda s: s.lag.p99), unit="s")
    meter.create_observable_gauge("ferroloop.loop.ready", observe(lambda s: s.ready))
    tracer = trace.get_tracer("ferroloop")

    def on_stall(report: ferroloop.StallReport) -> None:
        # Called on the watchdog thread; the OpenTelemetry API is thread-safe.
        with tracer.start_as_current_span("ferroloop.stall") as span:
            span.set_attribute("ferroloop.stall.ended", report.ended)
            span.set_attribute("ferroloop.stall.duration_s", report.duration)
            span.set_attribute("ferroloop.stall.callback", report.callback or "")
            span.set_attribute("ferroloop.stall.task", report.task or "")
            span.set_attribute(
                "ferroloop.stall.stack",
                [f"{f.filename}:{f.lineno} {f.name}" for f in report.stack],
            )

    loop.set_stall_handler(0.1, on_stall)


async def main() -> None:
    loop = asyncio.get_running_loop()
    instrument(loop)
    if metrics is None:
        loop.set_stall_handler(0.1, lambda r: print("would export stall:", r.format()))
    loop.call_soon(time.sleep, 0.2)
    await asyncio.sleep(0.4)
    print("would export:", loop.stats())


if __name__ == "__main__":
    ferroloop.run(main())
