"""Watching and ending processes that are not this process's children (Linux /proc and pidfds),
for `ascend-v4 launch`: msrun is the parent of the ranks, so their exit status is read from
/proc/<pid>/stat while they are zombies, and a job's processes are found by a marker variable in
their environment (every descendant inherits it), never by name."""
from __future__ import annotations

import ctypes
import os
import select
import signal
import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, NamedTuple, Optional

PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36


class Stat(NamedTuple):
    state: str              # "R", "S", ..., "Z" (zombie: ended, not yet reaped)
    ppid: int
    pgrp: int
    session: int
    start: int              # start time in clock ticks since boot: (pid, start) names a process
    exit_status: int        # waitpid(2)-style status, meaningful for a zombie


def proc_stat(pid: int) -> Optional[Stat]:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read().decode("ascii", "replace")
    except OSError:
        return None
    f = raw[raw.rindex(")") + 2:].split()          # the command name may hold spaces and ")"
    return Stat(f[0], int(f[1]), int(f[2]), int(f[3]), int(f[19]), int(f[49]) if len(f) > 49 else 0)


def proc_environ(pid: int) -> Dict[str, str]:
    """The environment a process was exec'd with ({} if unreadable)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            raw = fh.read()
    except OSError:
        return {}
    items = (item.partition(b"=") for item in raw.split(b"\0"))
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, sep, v in items if sep}


def all_pids() -> List[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def marked_pids(key: str, value: str) -> List[int]:
    """Live (non-zombie) processes other than this one whose environment has key=value."""
    me, out = os.getpid(), []
    for pid in all_pids():
        st = proc_stat(pid)
        if pid != me and st and st.state != "Z" and proc_environ(pid).get(key) == value:
            out.append(pid)
    return out


def _prctl(option: int, arg: int) -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(option, arg, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def become_subreaper() -> None:
    """Orphaned descendants are re-parented to this process (and reaped by `reap`), not to init."""
    _prctl(PR_SET_CHILD_SUBREAPER, 1)


def die_with_parent() -> None:
    """A Popen preexec_fn: the child gets SIGTERM when this process dies."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def describe_exit(code: Optional[int]) -> str:
    """A Popen-style return code (negative: killed by that signal) in words."""
    if code is None:
        return "ended, exit status not recorded"
    if code >= 0:
        return f"exit status {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    text = f"killed by {name} ({-code})"
    if -code == signal.SIGKILL:
        text += ": killed from outside, or by the kernel's out-of-memory killer"
    return text


def shell_code(code: Optional[int]) -> int:
    """The shell's exit status for a failed process: its own, or 128 + signal."""
    if code is None:
        return 1
    return 128 - code if code < 0 else (code or 1)


@dataclass
class Watched:
    """A process seen through a pidfd; `update` records when and how it ended."""
    name: str                         # "rank 3" / "scheduler"
    pid: int
    start: int
    rank: Optional[int] = None
    pidfd: Optional[int] = None
    code: Optional[int] = None        # Popen convention once known
    ended: Optional[float] = None     # time.monotonic() the end was seen
    known: bool = False               # code read from the zombie or supplied by `resolve`

    def __post_init__(self):
        try:
            self.pidfd = os.pidfd_open(self.pid)       # readable the moment the process ends
        except (OSError, AttributeError):
            self.pidfd = None                          # then /proc polling alone

    @property
    def failed(self) -> bool:
        return self.ended is not None and self.known and self.code != 0

    def update(self, resolve: Callable[["Watched"], None]) -> None:
        """Look at the process; `resolve(self)` may set code/known once it is gone without a
        zombie to read (its parent reaped it first)."""
        if self.ended is None:
            st = proc_stat(self.pid)
            alive = st is not None and st.start == self.start
            if alive and st.state != "Z":
                return
            self.ended = time.monotonic()
            if alive:                                             # a zombie: status readable
                self.code, self.known = os.waitstatus_to_exitcode(st.exit_status), True
                if st.ppid == os.getpid():
                    reap([self.pid])
            if self.pidfd is not None:
                os.close(self.pidfd)
                self.pidfd = None
        if not self.known:
            resolve(self)


def wait_any(procs: Iterable[Watched], seconds: float) -> None:
    """Sleep up to `seconds`, waking as soon as one of the processes ends."""
    fds = [p.pidfd for p in procs if p.pidfd is not None]
    if not fds:
        time.sleep(seconds)
        return
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    poller.poll(seconds * 1000)


def reap(pids: Iterable[int]) -> None:
    """Collect those of `pids` that are this process's zombie children (re-parented orphans)."""
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


def reap_groups(groups: Iterable[int], skip: int) -> None:
    """Collect this process's zombie children in the process groups `groups` (orphans of the job
    re-parented here; a zombie keeps its group but no longer shows its environment)."""
    me, groups = os.getpid(), set(groups)
    reap(pid for pid in all_pids()
         if pid != skip and (st := proc_stat(pid)) and st.state == "Z" and st.ppid == me
         and st.pgrp in groups)


def signal_job(groups: Iterable[int], key: str, value: str, sig: int) -> List[int]:
    """Signal each process group in `groups` that still holds a process marked key=value, then
    every marked process (one that left its group too). Returns the marked pids found."""
    marked = marked_pids(key, value)
    live_groups = {st.pgrp for st in map(proc_stat, marked) if st is not None}
    for pgid in set(groups) & live_groups:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass
    for pid in marked:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
    return marked
