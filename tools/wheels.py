"""Portable manylinux wheels of ferroloop for every supported CPython, each smoke-tested.

`python3 tools/dev.py wheels [MINOR ...]` writes into dist/ one wheel per CPython version
(per-version wheels, not abi3: the limited API has no vectorcall and no PyContext_*). Each is
linked by maturin through zig against glibc 2.17, so it is tagged manylinux2014
(`manylinux_2_17`) whatever glibc the building machine has, and maturin audits the symbols.
Then every wheel is checked here independently (its platform tags, the newest GLIBC symbol
version its extension needs, the libraries it loads), installed into a fresh venv of its
Python and run with tools/wheel_smoke.py, from outside the source tree.

The work files stay out of other builds' way: the build venv (maturin and zig, pinned) and
the smoke venvs live in .venv-wheels/, and cargo builds into target/wheels/<version>/. One
target directory per version, because in a shared one every change of interpreter rebuilds
pyo3 and the extension, so a second run would recompile everything again.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DIST = ROOT / "dist"
WORK = ROOT / ".venv-wheels"
TARGET = ROOT / "target" / "wheels"
SMOKE = ROOT / "tools" / "wheel_smoke.py"
# Pinned so that every machine links the same way; ziglang is the zig toolchain on PyPI.
BUILD_REQUIREMENTS = ["maturin==1.16.0", "ziglang==0.17.1"]
COMPATIBILITY = "manylinux2014"
# The newest glibc a wheel may need: manylinux2014 is glibc 2.17.
MAX_GLIBC = (2, 17)
ARCH = "x86_64"
# What manylinux2014 lets an extension load from the system (PEP 599), less the X11 and GL
# libraries, which ferroloop has no business loading.
ALLOWED_LIBRARIES = {
    "libc.so.6",
    "libm.so.6",
    "libdl.so.2",
    "librt.so.1",
    "libpthread.so.0",
    "libgcc_s.so.1",
    "libstdc++.so.6",
    "libutil.so.1",
    "ld-linux-x86-64.so.2",
}
# Platform tags older than or equal to manylinux2014, by their legacy names.
LEGACY_TAGS = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}


def run(cmd: list[str | os.PathLike], env: dict[str, str] | None = None, cwd=ROOT) -> None:
    """Run a command; stop the whole script if it fails."""
    printable = " ".join(str(c) for c in cmd)
    print(f"+ {printable}", flush=True)
    result = subprocess.run([str(c) for c in cmd], cwd=cwd, env={**os.environ, **(env or {})})
    if result.returncode != 0:
        sys.exit(f"command failed with exit status {result.returncode}: {printable}")


def fail(message: str) -> None:
    sys.exit(f"wheels: {message}")


def build_venv() -> Path:
    """The venv with maturin and zig (idempotent); returns its python."""
    venv = WORK / "build"
    python = venv / "bin" / "python"
    if not python.exists():
        run([sys.executable, "-m", "venv", venv])
    stamp = venv / ".requirements"
    if not stamp.exists() or stamp.read_text().splitlines() != BUILD_REQUIREMENTS:
        run([python, "-m", "pip", "install", "--quiet", *BUILD_REQUIREMENTS])
        stamp.write_text("\n".join(BUILD_REQUIREMENTS))
    return python


def cp_tag(minor: str) -> str:
    return "cp" + minor.replace(".", "")


def build(minor: str, python: Path, build_python: Path) -> Path:
    """Build the wheel of one Python version into dist/; returns its path."""
    tag = cp_tag(minor)
    pattern = f"ferroloop-*-{tag}-{tag}-*.whl"
    for old in DIST.glob(pattern):
        old.unlink()
    bin_dir = build_python.parent
    env = {
        "CARGO_TARGET_DIR": str(TARGET / minor),
        # The pinned zig: maturin runs `python -m ziglang` with this python.
        "CARGO_ZIGBUILD_PYTHON_PATH": str(build_python),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    maturin = bin_dir / "maturin"
    # Stripped: a user's wheel needs no debug info (the dev builds keep it, for profiling).
    options = ["--release", "--strip", "--zig", "--compatibility", COMPATIBILITY, "--out", DIST]
    run([maturin, "build", *options, "--interpreter", python], env=env)
    built = sorted(DIST.glob(pattern))
    if len(built) != 1:
        fail(f"expected one {tag} wheel in {DIST}, found {[w.name for w in built]}")
    return built[0]


def check_platform_tags(wheel: Path, minor: str) -> None:
    """The filename must name this CPython (not abi3) and only manylinux tags <= 2.17."""
    parts = wheel.name.removesuffix(".whl").split("-")
    if len(parts) != 5:
        fail(f"{wheel.name}: not name-version-python-abi-platform")
    _name, _version, python_tag, abi_tag, platforms = parts
    tag = cp_tag(minor)
    if (python_tag, abi_tag) != (tag, tag):
        fail(f"{wheel.name}: tagged {python_tag}-{abi_tag}, not {tag}-{tag}")
    for platform in platforms.split("."):
        legacy = re.fullmatch(rf"(manylinux1|manylinux2010|manylinux2014)_{ARCH}", platform)
        modern = re.fullmatch(rf"manylinux_(\d+)_(\d+)_{ARCH}", platform)
        if legacy:
            glibc = LEGACY_TAGS[legacy.group(1)]
        elif modern:
            glibc = (int(modern.group(1)), int(modern.group(2)))
        else:
            fail(f"{wheel.name}: platform tag {platform} is not a manylinux tag for {ARCH}")
        if glibc > MAX_GLIBC:
            fail(f"{wheel.name}: platform tag {platform} needs a glibc newer than 2.17")


def glibc_version(text: str) -> tuple[int, ...]:
    return tuple(int(n) for n in text.split("."))


def check_extension(so: Path, wheel_name: str) -> str:
    """The newest GLIBC_ symbol version the extension needs (checked <= 2.17), after
    checking the libraries it loads and that no libc symbol is left without a version."""
    symbols = subprocess.run(
        ["objdump", "-T", str(so)], capture_output=True, text=True, check=True
    ).stdout
    needed: dict[tuple[int, ...], list[str]] = {}
    for line in symbols.splitlines():
        # `(GLIBC_2.17) clock_gettime`; other libraries' versions (GCC_3.0) pass.
        found = re.search(r"\(([A-Z]+)_([0-9.]+)\)\s+(\S+)$", line)
        if found:
            if found.group(1) == "GLIBC":
                needed.setdefault(glibc_version(found.group(2)), []).append(found.group(3))
            continue
        # An undefined symbol without a version that is not weak and not Python's C API
        # would bind to whatever the running libc has: it must not exist.
        fields = line.split()
        if "*UND*" in fields and fields[1] != "w" and not re.match(r"_?Py", fields[-1]):
            fail(f"{wheel_name}: {so.name} needs {fields[-1]} without a symbol version")
    if not needed:
        fail(f"{wheel_name}: {so.name} needs no GLIBC symbol at all (objdump output changed?)")
    newest = max(needed)
    if newest > MAX_GLIBC:
        symbols_named = ", ".join(sorted(needed[newest])[:5])
        fail(f"{wheel_name}: {so.name} needs GLIBC_{'.'.join(map(str, newest))} ({symbols_named})")
    headers = subprocess.run(
        ["objdump", "-p", str(so)], capture_output=True, text=True, check=True
    ).stdout
    libraries = set(re.findall(r"^\s*NEEDED\s+(\S+)$", headers, flags=re.M))
    if not libraries <= ALLOWED_LIBRARIES:
        fail(f"{wheel_name}: {so.name} loads {sorted(libraries - ALLOWED_LIBRARIES)}")
    return "GLIBC_" + ".".join(map(str, newest))


def check_wheel(wheel: Path, minor: str) -> str:
    """Check one wheel's tags and extension; returns the newest GLIBC version it needs."""
    check_platform_tags(wheel, minor)
    with zipfile.ZipFile(wheel) as archive, tempfile.TemporaryDirectory() as scratch:
        extensions = [n for n in archive.namelist() if n.endswith(".so")]
        expected = f"ferroloop/_core.cpython-{minor.replace('.', '')}-{ARCH}-linux-gnu.so"
        if extensions != [expected]:
            fail(f"{wheel.name}: extensions {extensions}, expected [{expected}]")
        return check_extension(Path(archive.extract(expected, scratch)), wheel.name)


def smoke(minor: str, python: Path, wheel: Path) -> None:
    """Install the wheel alone into a fresh venv of its Python and run the smoke program
    there, isolated and from outside the source tree."""
    venv = WORK / f"smoke-{minor}"
    run([python, "-m", "venv", "--clear", venv])
    vpython = venv / "bin" / "python"
    run([vpython, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", wheel])
    run([vpython, "-I", SMOKE], cwd=WORK)


def main(versions: list[str], supported: Iterable[str], find_python: Callable[[str], Path]) -> None:
    """Build, check and smoke-test the wheels of `versions` (all `supported` ones when it
    is empty); `find_python(minor)` gives the interpreter of each (tools/dev.py's, which
    can install 3.14 and 3.15)."""
    started = time.monotonic()
    supported = list(supported)
    versions = versions or supported
    for minor in versions:
        if minor not in supported:
            fail(f"Python {minor} is not supported ({', '.join(supported)})")
    if shutil.which("objdump") is None:
        fail("objdump is needed to check the wheels' symbols (apt-get install binutils)")
    interpreters = {minor: find_python(minor) for minor in versions}
    DIST.mkdir(exist_ok=True)
    build_python = build_venv()
    wheels = {minor: build(minor, python, build_python) for minor, python in interpreters.items()}
    glibc = {minor: check_wheel(wheel, minor) for minor, wheel in wheels.items()}
    for minor, python in interpreters.items():
        smoke(minor, python, wheels[minor])
    print(f"\n{len(wheels)} wheels in {DIST.relative_to(ROOT)}/, built and checked:")
    for minor, wheel in wheels.items():
        print(f"  {wheel.name}  (needs {glibc[minor]} at most, smoke test passed)")
    print(f"wheels done in {time.monotonic() - started:.0f} s")
