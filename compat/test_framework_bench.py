"""The real-framework benchmark's servers answer its load generator correctly on ferroloop.

A smoke test of `bench/net/run_net.py --suite frameworks`, not a measurement: each app of
bench/net/framework_apps.py runs on ferroloop for a fraction of a second under
`loadgen` (built here in debug mode), which checks every reply byte for byte (HTTP status,
Content-Length and length; the WebSocket handshake and each echoed frame; each echoed
line) and reports errors. The test asserts that replies came and none was wrong.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APPS = ROOT / "bench" / "net" / "framework_apps.py"
START_TIMEOUT = 30


@pytest.fixture(scope="module")
def loadgen() -> Path:
    subprocess.run(
        ["cargo", "build", "-q", "-p", "ferroloop-loadgen"], cwd=ROOT, check=True, timeout=600
    )
    meta = subprocess.run(
        ["cargo", "metadata", "--no-deps", "--format-version", "1"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(json.loads(meta.stdout)["target_directory"]) / "debug" / "loadgen"


def start(app: str) -> tuple[subprocess.Popen, str]:
    """Starts the app on ferroloop; returns the process and its address once it is ready."""
    # The app finds ferroloop where this test does: the source tree on PYTHONPATH
    # (`tools/dev.py compat`) or an installed wheel (`compat 3.14`).
    proc = subprocess.Popen(
        [sys.executable, str(APPS), "--app", app, "--loop", "ferroloop"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        ready = sel.select(START_TIMEOUT)
    line = proc.stdout.readline().decode() if ready else ""
    if not line.startswith("ready "):
        stop(proc)
        pytest.fail(f"{app} did not start: {line!r} {proc.stderr.read().decode()[-2000:]}")
    assert "ferroloop" in line.split()[2], line
    return proc, line.split()[1]


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    proc.stdout.close()
    proc.stderr.close()


@pytest.mark.parametrize(
    ("app", "mode", "size"),
    [
        ("starlette", ["--mode", "http"], "1k"),
        ("fastapi", ["--mode", "http"], "1k"),
        ("aiohttp", ["--mode", "http"], "1k"),
        ("aiohttp", ["--mode", "http"], "100k"),
        ("websockets", ["--mode", "ws"], "1k"),
        ("websockets", ["--mode", "ws"], "70000"),
        ("lines", ["--mode", "echo", "--frames", "lines"], "1k"),
    ],
)
def test_app_answers_the_load_generator_correctly(loadgen, app, mode, size):
    proc, addr = start(app)
    try:
        cmd = [str(loadgen), *mode, "--addr", addr, "-c", "3", "-s", size, "-d", "0.3", "-w", "0.1"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    finally:
        stop(proc)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["errors"] == 0, result["error_samples"]
    assert result["requests"] > 0, result
    assert result["ok"] is True and out.returncode == 0, (result, out.stderr)
