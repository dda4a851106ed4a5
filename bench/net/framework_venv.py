"""The venv the `frameworks` suite runs its servers in: `.venv-bench`, with pinned frameworks.

run_net.py creates it on first use (and updates it when the pins change) with the
interpreter that runs the servers otherwise, so it has the same Python as `.venv`, whose
ferroloop build the servers import from the source tree (PYTHONPATH=python).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
VENV = ROOT / ".venv-bench"
# aiohttp, starlette, uvicorn and websockets as in tools/dev.py's COMPAT_REQUIREMENTS;
# fastapi 0.163.2 is the release whose starlette range includes 1.10.0.
REQUIREMENTS = [
    "aiohttp==3.14.5",
    "fastapi==0.163.2",
    "httptools==0.9.0",
    "starlette==1.10.0",
    "uvicorn==0.54.0",
    "uvloop==0.23.0",
    "websockets==17.4",
]


def ensure(base_python: str) -> Path:
    """Creates or updates the venv (idempotent); returns its interpreter."""
    python = VENV / "bin" / "python"
    if not python.exists():
        print(f"$ {base_python} -m venv {VENV}", file=sys.stderr, flush=True)
        subprocess.run([base_python, "-m", "venv", str(VENV)], check=True)
    stamp = VENV / ".requirements"
    if not stamp.exists() or stamp.read_text().splitlines() != REQUIREMENTS:
        cmd = [str(python), "-m", "pip", "install", "--quiet", *REQUIREMENTS]
        print(f"$ {' '.join(cmd)}", file=sys.stderr, flush=True)
        subprocess.run(cmd, check=True, timeout=900)
        stamp.write_text("\n".join(REQUIREMENTS))
    return python
