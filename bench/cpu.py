"""CPU time of processes and of the machine, from /proc (Linux), for the benchmarks' reports:
who used the cores during a measured step (the load generator, the server's processes, Redis,
everyone else)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PROC = Path("/proc")


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process (all its threads) so far; 0 when it is gone."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return 0.0
    # The command name (field 2) is in parentheses and may hold spaces: count after it.
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def children(pid: int) -> list[int]:
    """The pids whose parent is ``pid`` (one level)."""
    found = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        if int(text[text.rindex(")") + 2 :].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def tree(pid: int) -> list[int]:
    """``pid`` and every descendant of it."""
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        todo.extend(children(current))
    return pids


def machine_busy_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of every core since boot, from /proc/stat; busy excludes
    idle and iowait."""
    first = (_PROC / "stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(v) for v in first[:8]]  # user nice system idle iowait irq softirq steal
    total = sum(ticks)
    return (total - ticks[3] - ticks[4]) / _TICKS, total / _TICKS


@dataclass
class CpuSnapshot:
    """CPU seconds of named groups of processes, and of the machine, at one moment."""

    groups: dict[str, float]
    busy_s: float
    total_s: float


def snapshot(groups: Mapping[str, Iterable[int]]) -> CpuSnapshot:
    busy, total = machine_busy_s()
    return CpuSnapshot(
        {name: sum(process_cpu_s(p) for p in pids) for name, pids in groups.items()}, busy, total
    )


def cores_used(before: CpuSnapshot, after: CpuSnapshot, wall_s: float) -> dict[str, float]:
    """Cores each group kept busy between two snapshots (1.0: one core the whole time), the
    machine's busy cores, and ``others``: what the machine did beyond the named groups."""
    used = {
        name: (after.groups[name] - before.groups[name]) / wall_s
        for name in after.groups
        if name in before.groups
    }
    machine = (after.busy_s - before.busy_s) / wall_s
    used["machine"] = machine
    used["others"] = max(0.0, machine - sum(v for k, v in used.items() if k != "machine"))
    return {k: round(v, 3) for k, v in used.items()}
