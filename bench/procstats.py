"""CPU and peak memory of a server process and everything it started, read from /proc.

CPU is utime+stime (clock ticks) of the process, its live descendants, and its reaped children
(cutime+cstime), so a server that forks or uses threads is charged for all of it. Threads are
included in their process's utime/stime by the kernel.
"""

from __future__ import annotations

import os

TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            text = fh.read()
    except OSError:
        return None
    # comm may contain spaces and parentheses: split after the last ')'.
    return text[text.rindex(")") + 2:].split()


def descendants(root: int) -> list[int]:
    """root and every live process below it."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        fields = _stat_fields(int(name))
        if fields:
            children.setdefault(int(fields[1]), []).append(int(name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cpu_split(root: int) -> tuple[float, float]:
    """(user, system) seconds of root and its descendants, plus what reaped children used."""
    user = system = 0
    for pid in descendants(root):
        fields = _stat_fields(pid)
        if not fields:
            continue
        # fields[11..14] are utime, stime, cutime, cstime (stat fields 14-17).
        user += int(fields[11]) + int(fields[13])
        system += int(fields[12]) + int(fields[14])
    return user / TICK, system / TICK


def cpu_seconds(root: int) -> float:
    return sum(cpu_split(root))


def thread_cpu_ns(root: int) -> int:
    """Nanosecond CPU time of every live thread of root and its descendants (schedstat).

    Finer than clock ticks, for short runs; it misses threads that already exited.
    """
    total = 0
    for pid in descendants(root):
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as fh:
                    total += int(fh.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass
    return total


def peak_rss_kib(root: int) -> int:
    """Sum of VmHWM (peak resident set) over root and its live descendants."""
    total = 0
    for pid in descendants(root):
        try:
            with open(f"/proc/{pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


class CpuMeter:
    """CPU used by a process tree between start() and stop(); given several roots (a server and
    the database it uses), the sum over their trees."""

    def __init__(self, pid: int | list[int]):
        self.pids = [pid] if isinstance(pid, int) else list(pid)
        self.seconds = 0.0
        self.ns = 0

    def _split(self) -> tuple[float, float]:
        splits = [cpu_split(pid) for pid in self.pids]
        return sum(u for u, _ in splits), sum(s for _, s in splits)

    def start(self) -> "CpuMeter":
        self._split0 = self._split()
        self._n0 = sum(thread_cpu_ns(pid) for pid in self.pids)
        return self

    def stop(self) -> "CpuMeter":
        user, system = self._split()
        self.user = user - self._split0[0]
        self.system = system - self._split0[1]
        self.seconds = self.user + self.system
        self.ns = sum(thread_cpu_ns(pid) for pid in self.pids) - self._n0
        return self

    def us_per(self, count: int) -> float:
        """Microseconds per item; schedstat precision when it is close to the tick figure."""
        if not count:
            return 0.0
        return self.ns / 1000 / count if self.ns else self.seconds * 1e6 / count
