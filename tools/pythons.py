"""CPython 3.14 and 3.15 for these Debian 12 machines, from Debian's own packages.

Debian 12 has no package of either version, and the `sid` suite's packages need a newer glibc
and OpenSSL than the system has, so they cannot be installed with apt. Instead the packages
of the whole closure (sid's own libc6, libssl, libffi, ... among them) are downloaded with a
private apt state and unpacked with `dpkg -x` into one prefix; the interpreters get their ELF
interpreter and RPATH pointed into it (patchelf), and sysconfig, which still names `/usr`, is
pointed at the prefix. Nothing of the system changes except that `patchelf` gets installed.

The result is quick to reuse: `ensure()` only checks what is there when a previous call
finished (a stamp file records the versions), so CI pays the ~40 s once per machine.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

# Where the interpreters go; outside the clone so every clone of the machine shares them.
PREFIX = Path(os.environ.get("FERROLOOP_PYTHONS_PREFIX", "/opt/ferroloop-pythons"))
# The versions Debian 12 lacks; 3.11-3.13 come from the machine's pyenv.
SID_VERSIONS = ("3.14", "3.15")
SID_SOURCE = "deb [trusted=yes] http://deb.debian.org/debian sid main\n"
MULTIARCH = "x86_64-linux-gnu"
# sysconfig variables holding install paths that must move under the prefix.
PATH_VARIABLES = (
    "BINDIR BINLIBDEST CONFINCLUDEDIR CONFINCLUDEPY DESTLIB DESTSHARED EXENAME INCLUDEDIR "
    "INCLUDEPY LIBDEST LIBDIR LIBPC LIBPL MACHDESTLIB SCRIPTDIR WHEEL_PKG_DIR datarootdir "
    "exec_prefix host_exec_prefix host_prefix prefix"
).split()
# What a usable interpreter must import (the test suite and venv creation need these).
SELF_CHECK = "import ssl, sqlite3, ctypes, _asyncio, venv, ensurepip, test.test_asyncio"


def interpreter(version: str) -> Path:
    """Path of the installed `pythonX.Y` of a sid version."""
    return PREFIX / "usr" / "bin" / f"python{version}"


def _stamp() -> Path:
    return PREFIX / ".installed-versions"


def _works(python: Path) -> bool:
    if not python.exists():
        return False
    check = subprocess.run([str(python), "-c", SELF_CHECK], capture_output=True)
    return check.returncode == 0


def ensure(versions: tuple[str, ...] = SID_VERSIONS) -> dict[str, Path]:
    """Install the sid interpreters unless a finished install of them is already there."""
    stamp = _stamp()
    done = stamp.exists() and set(versions) <= set(stamp.read_text().split())
    if not (done and all(_works(interpreter(v)) for v in versions)):
        _install(versions)
        stamp.write_text(" ".join(versions))
    return {v: interpreter(v) for v in versions}


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    print("+ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, check=True, **kwargs)


def _ensure_patchelf() -> None:
    if shutil.which("patchelf"):
        return
    _run(["apt-get", "update", "-qq"])
    _run(["apt-get", "install", "-y", "-q", "patchelf"])


def _private_apt(state: Path) -> list[str]:
    """apt options for a state of our own: sid as the only source, an empty dpkg status."""
    for sub in ("lists/partial", "cache/archives/partial"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    (state / "sources.list").write_text(SID_SOURCE)
    (state / "status").write_text("")
    return [
        f"-o=Dir::Etc::sourcelist={state / 'sources.list'}",
        "-o=Dir::Etc::sourceparts=/dev/null",
        f"-o=Dir::State::Lists={state / 'lists'}",
        f"-o=Dir::Cache={state / 'cache'}",
        f"-o=Dir::State::status={state / 'status'}",
        "-o=APT::Sandbox::User=root",
    ]


def _download_closure(versions: tuple[str, ...], state: Path) -> list[Path]:
    apt = ["apt-get", *_private_apt(state)]
    _run([*apt, "-q", "update"])
    packages = [
        f"{kind.format(v)}"
        for v in versions
        for kind in ("python{}-dev", "python{}-venv", "libpython{}-testsuite")
    ]
    plan = _run(
        [*apt, "-s", "--no-install-recommends", "install", *packages],
        capture_output=True,
        text=True,
    ).stdout
    closure = [line.split()[1] for line in plan.splitlines() if line.startswith("Inst ")]
    debs = state / "debs"
    shutil.rmtree(debs, ignore_errors=True)
    debs.mkdir()
    _run([*apt, "-q", "download", *closure], cwd=debs)
    return sorted(debs.glob("*.deb"))


def _point_sysconfig_at_prefix(version: str) -> None:
    stdlib = PREFIX / "usr" / "lib" / f"python{version}"
    names = "|".join(PATH_VARIABLES)
    prefix = str(PREFIX)
    data = stdlib / f"_sysconfigdata__{MULTIARCH}.py"
    data.write_text(
        re.sub(rf"^(    '(?:{names})': ')/usr", rf"\g<1>{prefix}/usr", data.read_text(), flags=re.M)
    )
    for json_vars in stdlib.glob("_sysconfig_vars__*.json"):
        text = json_vars.read_text()
        text = re.sub(rf'^(  "(?:{names})": ")/usr', rf"\g<1>{prefix}/usr", text, flags=re.M)
        json_vars.write_text(text)
    for details in stdlib.glob("build-details*.json"):
        details.write_text(details.read_text().replace('"/usr', f'"{prefix}/usr'))


def _fix_interpreter(version: str) -> None:
    libdir = PREFIX / "usr" / "lib" / MULTIARCH
    python = interpreter(version)
    # An RPATH (not RUNPATH) also covers the libraries the stdlib's extension modules load.
    _run(
        [
            "patchelf",
            "--set-interpreter",
            str(libdir / "ld-linux-x86-64.so.2"),
            "--force-rpath",
            "--set-rpath",
            str(libdir),
            str(python),
        ]
    )
    _point_sysconfig_at_prefix(version)
    # Debian's pyconfig.h only includes the multiarch one, which a build would not find.
    include = PREFIX / "usr" / "include"
    real = include / MULTIARCH / f"python{version}" / "pyconfig.h"
    wrapper = include / f"python{version}" / "pyconfig.h"
    wrapper.unlink()
    shutil.copyfile(real, wrapper)
    for script in (PREFIX / "usr" / "bin").glob(f"*{version}"):
        if script == python or script.is_symlink():
            continue
        text = script.read_bytes()
        if text.startswith(b"#!"):
            fixed = text.replace(f"/usr/bin/python{version}".encode(), str(python).encode(), 1)
            fixed = fixed.replace(f"exec python{version} ".encode(), f"exec {python} ".encode())
            script.write_bytes(fixed)
    stdlib = PREFIX / "usr" / "lib" / f"python{version}"
    subprocess.run(
        [str(python), "-m", "compileall", "-q", "-j0", "-x", "/test/", str(stdlib)],
        capture_output=True,
    )
    _run([str(python), "-c", f"{SELF_CHECK}; import sys; print(sys.version)"])


def _install(versions: tuple[str, ...]) -> None:
    _ensure_patchelf()
    state = Path(os.environ.get("FERROLOOP_PYTHONS_WORK", "/tmp/ferroloop-sid-apt"))
    debs = _download_closure(versions, state)
    shutil.rmtree(PREFIX, ignore_errors=True)
    PREFIX.mkdir(parents=True)
    for deb in debs:
        _run(["dpkg", "-x", str(deb), str(PREFIX)], stdout=subprocess.DEVNULL)
    for version in versions:
        _fix_interpreter(version)


if __name__ == "__main__":
    for version, path in ensure().items():
        print(version, path)
