"""A bug in the Rust core must surface as a Python exception, never abort the process."""

import subprocess
import sys

SCRIPT = """
import ferroloop._core as core
try:
    core._panic_for_tests("deliberate")
except BaseException as exc:
    print(type(exc).__name__, exc)
print("interpreter still alive")
"""


def test_rust_panic_becomes_an_exception():
    # A separate interpreter: with panic = "abort" the whole process would die here.
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "PanicException deliberate" in result.stdout
    assert "interpreter still alive" in result.stdout
