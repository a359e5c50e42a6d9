"""What a benchmark ran on, for the line above its table: CPU, cores, Python, turnlog's version,
core and build profile, and the commit of the source tree it was imported from."""

from __future__ import annotations

import os
import platform
import struct
import subprocess
from pathlib import Path

import turnlog
from turnlog._impl import native

__all__ = ["build_profile", "cpu_seconds", "machine", "others_share"]


def build_profile() -> str:
    """What kind of build the native module is. Release builds are stripped (``Cargo.toml``);
    dev and profiling builds keep their symbol table."""
    if native is None:
        return "no native module (pure Python)"
    path = native.__file__ or ""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return "unknown"
    if data[:4] != b"\x7fELF" or data[4] != 2:  # not 64-bit ELF: no cheap way to tell
        return "unknown"
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    names_at = struct.unpack_from("<Q", data, shoff + shstrndx * shentsize + 0x18)[0]

    def name(index: int) -> bytes:
        start = names_at + struct.unpack_from("<I", data, shoff + index * shentsize)[0]
        return data[start : data.index(b"\0", start)]

    sections = {name(i) for i in range(shnum)}
    if b".debug_info" in sections:
        return "dev or profiling (debug info in the module)"
    if b".symtab" in sections:
        return "optimised, not stripped"
    return "release (stripped)"


def machine() -> str:
    """One line: CPU model, cores, OS, Python, turnlog (version, core, build, commit)."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    models = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    cpu = models[0] if models else platform.processor() or "unknown CPU"
    try:  # a turnlog installed from a wheel has no commit to show
        commit = subprocess.run(
            ["git", "-C", str(Path(turnlog.__file__).parent), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        commit = ""
    return (
        f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}; "
        f"Python {platform.python_version()}; turnlog {turnlog.__version__} "
        f"({turnlog.IMPLEMENTATION}, {build_profile()}{f', commit {commit}' if commit else ''})"
    )


def cpu_seconds() -> tuple[float, float]:
    """CPU seconds used so far by the whole machine (``/proc/stat``; 0 where there is none) and
    by this process and its children, to tell afterwards how much others used meanwhile."""
    t = os.times()
    own = t.user + t.system + t.children_user + t.children_system
    try:
        ticks = [int(field) for field in Path("/proc/stat").read_text().split()[1:9]]
    except (OSError, ValueError):
        return 0.0, own
    # user nice system idle iowait irq softirq steal: all but idle and iowait kept a core busy
    # (steal: the hypervisor gave the core to another VM).
    busy = sum(ticks) - ticks[3] - ticks[4]
    return busy / os.sysconf("SC_CLK_TCK"), own


def others_share(start: tuple[float, float], elapsed: float) -> str:
    """How many cores other processes kept busy since ``start`` (a ``cpu_seconds()``)."""
    machine_now, own_now = cpu_seconds()
    if not machine_now:
        return "other processes' load unknown"
    others = max(0.0, (machine_now - start[0]) - (own_now - start[1])) / elapsed
    return f"other processes kept {others:.2f} of the {os.cpu_count()} cores busy meanwhile"
