"""`ascend-v4 launch`: start N ranks with MindSpore's `msrun`, stream rank 0, end the whole job on
the first failure. No MindSpore import here (msrun runs in its own process); the /proc and
signal mechanics are in tools/procwatch.py.

    launch -> msrun (a session of its own; the scheduler, on node 0, in msrun's group)
                 -> N workers, each `python ...` in a session of its own (msrun setsid()s them)

What msrun does alone (measured, MindSpore 2.10 on CPU, 2 ranks): it polls its workers once a
second and SIGKILLs the others when one exits non-zero, but then waits for the scheduler, which
only gives up on the dead ranks after its ~30 s heartbeat timeout: ~33 s from the failure to
msrun's exit, with a generic "Distributed job exited with exception". A rank blocked in a CPU
collective whose peer died (or hangs) fails by itself after ~33 s (mccl's CollectiveWait).

The watchdog here therefore:
- finds the workers (children of msrun that lead their own session; rank from their RANK_ID) and
  the scheduler (MS_ROLE=MS_SCHED) by scanning /proc, and watches each through a pidfd, so a
  death is seen at once and its status read from the zombie's /proc/<pid>/stat before msrun
  reaps it (msrun's own log line is the fallback);
- after the first failure waits at most `fault_timeout` for the other ranks to end, then stops
  the job (below);
- bounds the whole job by `timeout` and stops it on SIGINT / SIGTERM / SIGHUP (exit status 128 +
  the signal: 143 for SIGTERM);
- becomes the child subreaper, so ranks orphaned by a dying msrun are reaped here.
A rank that hangs with every process alive is caught by `timeout` (or by the collective's own
timeout: ~33 s with mccl, HCCL_EXEC_TIMEOUT on Ascend).

Stopping the job is drain-friendly: SIGTERM first goes to the ranks alone (each worker's process
group and every marked process outside msrun's group), once each, so that a serving rank 0 can
drain its requests and release the other ranks, and every rank can leave the cluster by itself
while msrun and the scheduler still run. Within `grace` seconds (--grace, default 15) msrun and
the scheduler are given SIGTERM as soon as the ranks are gone (after up to SETTLE s for a clean
exit when every rank exited 0), and whatever still runs when the grace ends gets SIGKILL: msrun's
process group, every worker's group and every process carrying this job's marker variable
(ASCEND_V4_LAUNCH_ID), never by name. A second SIGINT / SIGTERM to `launch` during the grace
skips to SIGKILL. msrun alone would not do this: SIGTERM kills it at once (the ranks, in sessions
of their own, do not hear of it), and on SIGINT it SIGKILLs every rank.

Logs: `<log_dir>/worker_<rank>.log` per rank, `scheduler.log` (node 0), `msrun_node<k>.log`
(msrun's own output) and `launch_node<k>.json` (pids, port, outcome). The default log folder is a
fresh `./launch_logs/<YYYYmmdd-HHMMSS>-<pid>`: it outlives the job, which is the point of logs.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, TextIO

from tools.procwatch import (Watched, become_subreaper, describe_exit, die_with_parent,
                             marked_pids, proc_environ, proc_stat, all_pids, reap_groups,
                             shell_code, signal_job, wait_any)

MARKER = "ASCEND_V4_LAUNCH_ID"
# MindSpore log lines below ERROR: C++ `[WARNING] DEVICE(123,7f..,python):...` and Python
# `[WARNING] ME(123:140..,MainProcess):...`
NOISE = re.compile(r"^\[(WARNING|INFO|DEBUG)\] [A-Z_]+\(\d+[,:]")
MSRUN_EXIT = re.compile(r"Worker process (\d+) exit with exception\. Error code: (-?\d+)")
SCAN_EVERY = 0.25         # s between /proc scans while workers are still being found
TAIL_LINES = 10
SETTLE = 3.0              # s msrun and the scheduler get to exit by themselves after clean ranks
KILL_WAIT = 10.0          # s for SIGKILLed processes to disappear


class LaunchError(ValueError):
    """The job cannot start (rank table, port, log folder, msrun missing); nothing was started."""


class LaunchUsageError(LaunchError):
    """A launch argument is wrong (count, node rank, command)."""


@dataclass
class LaunchSpec:
    nproc: int
    command: Sequence[str]
    nnodes: int = 1
    node_rank: int = 0
    master_addr: Optional[str] = None
    master_port: Optional[int] = None
    rank_table: Optional[str] = None
    log_dir: Optional[str] = None
    timeout: Optional[float] = None
    fault_timeout: float = 20.0
    grace: float = 15.0                 # SIGTERM to the ranks -> SIGKILL of what is left


def rank_command(command: Sequence[str]) -> List[str]:
    """What each rank runs: an ascend-v4 sub-command as `python -m tools.cli ...`, a script as
    `python script.py ...` (msrun starts `python` from PATH)."""
    if not command:
        raise LaunchUsageError("no command after `--`: e.g. `ascend-v4 launch --nproc 2 -- "
                               "generate --preset tiny` or `... -- script.py ARGS`")
    first, rest = command[0], list(command[1:])
    if first in ("python", "python3"):
        return [first] + rest
    if first.endswith(".py"):
        if not os.path.isfile(first):
            raise LaunchUsageError(f"{first}: no such script")
        return ["python", first] + rest
    from tools.cli import COMMANDS
    if first == "launch" or first not in COMMANDS:
        names = ", ".join(sorted(set(COMMANDS) - {"launch"}))
        raise LaunchUsageError(f"{first!r} is neither an ascend-v4 sub-command ({names}) "
                               f"nor a python script (.py)")
    return ["python", "-m", "tools.cli", first] + rest


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Prepared:
    argv: List[str]
    env: Dict[str, str]
    log_dir: str
    master_addr: str
    master_port: int
    stream_rank: int                     # the node's first rank, whose log is streamed
    launch_id: str
    msrun_log: str
    status_file: str


def prepare(spec: LaunchSpec) -> Prepared:
    """Check everything that can be checked before a process starts; create the log folder last."""
    if spec.nproc < 1 or spec.nnodes < 1:
        raise LaunchUsageError("--nproc and --nnodes must be at least 1")
    if not 0 <= spec.node_rank < spec.nnodes:
        raise LaunchUsageError(f"--node-rank {spec.node_rank} is not in 0..{spec.nnodes - 1}")
    if spec.fault_timeout <= 0 or (spec.timeout is not None and spec.timeout <= 0):
        raise LaunchUsageError("--timeout and --fault-timeout must be positive")
    if spec.grace < 0:
        raise LaunchUsageError("--grace must not be negative")
    if spec.nnodes > 1 and not spec.master_addr:
        raise LaunchUsageError("--nnodes > 1 needs --master-addr (the address of node 0)")
    cmd = rank_command(spec.command)
    world = spec.nproc * spec.nnodes
    env = dict(os.environ)
    if spec.rank_table:
        from tools.deploy.rank_table import RankTableError, check_rank_table
        try:
            check_rank_table(spec.rank_table, expected_ranks=world, expected_servers=spec.nnodes)
        except RankTableError as exc:
            raise LaunchError(str(exc)) from None
        env["RANK_TABLE_FILE"] = os.path.abspath(spec.rank_table)
    # msrun starts ranks as `python` from PATH: make that this interpreter
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    msrun = shutil.which("msrun", path=env["PATH"])
    if msrun is None:
        raise LaunchError("msrun not found next to this python or on PATH (it comes with mindspore)")
    if shutil.which(cmd[0], path=env["PATH"]) is None:
        raise LaunchError(f"msrun starts ranks as `{cmd[0]}`, which is not on PATH")
    addr = spec.master_addr or "127.0.0.1"
    port = spec.master_port
    if port is None:
        port = _free_port() if spec.nnodes == 1 else 8118
    elif spec.node_rank == 0 and addr in ("127.0.0.1", "localhost") and not _port_free(port):
        raise LaunchError(f"--master-port {port} is in use on 127.0.0.1")
    log_dir = os.path.abspath(spec.log_dir or os.path.join(
        "launch_logs", time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"))
    first_rank = spec.node_rank * spec.nproc
    msrun_log = os.path.join(log_dir, f"msrun_node{spec.node_rank}.log")
    status_file = os.path.join(log_dir, f"launch_node{spec.node_rank}.json")
    ours = [os.path.join(log_dir, f"worker_{first_rank + i}.log") for i in range(spec.nproc)]
    ours += [msrun_log, status_file] + ([os.path.join(log_dir, "scheduler.log")]
                                        if spec.node_rank == 0 else [])
    if os.path.exists(log_dir) and not os.path.isdir(log_dir):
        raise LaunchError(f"--log-dir {log_dir}: exists and is not a folder")
    taken = [p for p in ours if os.path.exists(p)]
    if taken:
        raise LaunchError(f"--log-dir {log_dir} already holds {os.path.basename(taken[0])} "
                          f"(an earlier job's logs): give another folder")
    launch_id = uuid.uuid4().hex
    env[MARKER] = launch_id
    env.setdefault("PYTHONUNBUFFERED", "1")        # rank 0's log streams as it is written
    argv = [msrun, f"--worker_num={world}", f"--local_worker_num={spec.nproc}",
            f"--master_addr={addr}", f"--master_port={port}", f"--node_rank={spec.node_rank}",
            f"--log_dir={log_dir}", "--join=True",
            # a rank id outside the job: msrun tails no worker log (this module streams rank 0)
            f"--tail_worker_log={world}"] + cmd
    os.makedirs(log_dir, exist_ok=True)
    return Prepared(argv, env, log_dir, addr, port, first_rank, launch_id, msrun_log, status_file)


def last_lines(path: str, n: int = TAIL_LINES) -> List[str]:
    """The last n lines of a log without MindSpore's WARNING/INFO lines."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 256 * 1024))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return []
    lines = [ln for ln in text.splitlines() if ln.strip() and not NOISE.match(ln)]
    return lines[-n:]


class LogFollower:
    """Copies new complete lines of a growing log file to `out`, without MindSpore noise."""

    def __init__(self, path: str, out: TextIO):
        self.path, self.out, self.fh, self.buf = path, out, None, b""

    def pump(self, final: bool = False) -> None:
        if self.fh is None:
            try:
                self.fh = open(self.path, "rb")
            except OSError:
                return
        self.buf += self.fh.read()
        *lines, self.buf = self.buf.split(b"\n")
        if final and self.buf:
            lines, self.buf = lines + [self.buf], b""
        shown = [ln.decode("utf-8", "replace") for ln in lines]
        shown = [ln for ln in shown if not NOISE.match(ln)]
        if shown and self.out is not None:
            try:
                self.out.write("\n".join(shown) + "\n")
                self.out.flush()
            except (BrokenPipeError, ValueError):       # a closed stdout stops the stream, not the job
                self.out = None

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()


class Job:
    """One node's part of a launch: msrun, its workers and (node 0) the scheduler."""

    def __init__(self, spec: LaunchSpec, prep: Prepared, out: TextIO, err: TextIO):
        self.spec, self.prep, self.out, self.err = spec, prep, out, err
        self.msrun: Optional[subprocess.Popen] = None
        self.msrun_start = 0
        self.workers: Dict[int, Watched] = {}       # pid -> rank
        self.scheduler: Optional[Watched] = None
        self.seen: set = set()                      # classified (or ignored) child pids
        self.signal: Optional[int] = None           # the first stop signal
        self.signals = 0                            # stop signals received
        self.t0 = time.monotonic()

    # -- discovery and watching
    def _procs(self) -> List[Watched]:
        """The ranks in rank order, then the scheduler."""
        ranks = sorted(self.workers.values(), key=lambda p: (p.rank is None, p.rank or 0, p.pid))
        return ranks + ([self.scheduler] if self.scheduler else [])

    def _groups(self) -> List[int]:
        return [self.msrun.pid] + list(self.workers)

    def discover(self) -> None:
        """Find msrun's children (or orphans re-parented here) that carry this job's marker:
        the scheduler (MS_ROLE=MS_SCHED) and the workers (MS_ROLE=MS_WORKER, each leading the
        session msrun gave it; the rank from RANK_ID)."""
        parents, found = {self.msrun.pid, os.getpid()}, False
        for pid in all_pids():
            if pid in self.seen or pid == self.msrun.pid:
                continue
            st = proc_stat(pid)
            if st is None or st.ppid not in parents or st.start < self.msrun_start:
                continue
            env = proc_environ(pid)
            if env.get(MARKER) != self.prep.launch_id:
                continue
            role = env.get("MS_ROLE")
            if role is None:
                continue                           # forked, not yet exec'd: look again later
            self.seen.add(pid)
            found = True
            if role == "MS_SCHED":
                self.scheduler = Watched("scheduler", pid, st.start)
            elif role == "MS_WORKER" and st.session == pid:
                rank_id = env.get("RANK_ID", env.get("MS_NODE_ID", ""))
                rank = int(rank_id) if rank_id.isdigit() else None
                name = f"rank {rank}" if rank is not None else f"worker pid {pid}"
                self.workers[pid] = Watched(name, pid, st.start, rank)
        if found:
            self._write_status()

    def _resolve(self, proc: Watched) -> None:
        """The status of a rank msrun reaped before it was seen as a zombie: msrun logs each
        failure as it reaps it (it polls once a second); one reaped without a line exited 0."""
        try:
            with open(self.prep.msrun_log, encoding="utf-8", errors="replace") as fh:
                text = fh.read()
        except OSError:
            text = ""
        for pid, code in MSRUN_EXIT.findall(text):
            if int(pid) == proc.pid:
                proc.code, proc.known = int(code), True
                return
        if self.msrun.poll() is not None:
            proc.code, proc.known = (0 if self.msrun.returncode == 0 else None), True
        elif time.monotonic() - proc.ended > 2.0:
            proc.code, proc.known = 0, True

    def watch(self, seconds: float) -> None:
        wait_any(self._procs(), seconds)
        for p in self._procs():
            p.update(self._resolve)

    # -- teardown
    def _alive(self) -> bool:
        return self.msrun.poll() is None or bool(marked_pids(MARKER, self.prep.launch_id))

    def _signal_ranks(self, done: set) -> None:
        """SIGTERM, once each, to the workers' process groups and to every marked process outside
        msrun's group (a rank's children, a rank not yet found); msrun and the scheduler are left
        running. `done` holds the groups and (pid, start) pairs already signalled: a second SIGTERM
        would cut a serving rank's drain short."""
        marked = [(pid, st) for pid in marked_pids(MARKER, self.prep.launch_id)
                  if (st := proc_stat(pid)) is not None and st.pgrp != self.msrun.pid]
        for pgid in sorted(set(self.workers) & {st.pgrp for _, st in marked} - done):
            done.add(pgid)
            try:
                os.killpg(pgid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
        for pid, st in marked:
            if st.pgrp in done or (pid, st.start) in done:
                continue
            done.add((pid, st.start))
            try:
                os.kill(pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass

    def _settle(self, until: float, stop_when, follower: Optional["LogFollower"]) -> bool:
        """Watch the job until `stop_when()`, the deadline, the job's end (-> False) or another
        stop signal; True while something of the job still runs."""
        signals = self.signals
        while time.monotonic() < until and self.signals == signals:
            self.watch(0.05)
            reap_groups(self._groups(), skip=self.msrun.pid)
            if follower is not None:
                follower.pump()
            if not self._alive():
                return False
            if stop_when():
                break
        return self._alive()

    def teardown(self, follower: Optional["LogFollower"] = None) -> Optional[str]:
        """End whatever of the job still runs (see the module docstring): SIGTERM to the ranks,
        then to msrun and the scheduler once the ranks are gone, SIGKILL to all that is left when
        `grace` s have passed. Returns how it ended in words, None when nothing was running."""
        if not self._alive():
            self._collect()
            return None
        t0 = time.monotonic()
        deadline = t0 + self.spec.grace
        signals = self.signals
        if self.msrun.poll() is None:
            self.discover()                       # a rank that started after the last scan
        self._signal_ranks(set())

        def ranks_ended() -> bool:
            return all(p.ended is not None for p in self.workers.values())
        alive = self._settle(deadline, ranks_ended, follower)
        ranks_by_themselves, t_ranks = bool(self.workers) and ranks_ended(), time.monotonic() - t0
        if alive and ranks_by_themselves and self.signals == signals and \
                all(p.known and p.code == 0 for p in self.workers.values()):
            alive = self._settle(min(deadline, time.monotonic() + SETTLE), lambda: False, follower)
        if alive and self.signals == signals:
            signal_job(self._groups(), MARKER, self.prep.launch_id, signal.SIGTERM)
            alive = self._settle(max(deadline, time.monotonic() + 1.0), lambda: False, follower)
        killed, t_kill = [], time.monotonic() - t0
        if alive:
            killed = [p.name for p in self._procs() if p.ended is None]
            killed += ["msrun"] if self.msrun.poll() is None else []
            killed = killed or ["the job's other processes"]
            signal_job(self._groups(), MARKER, self.prep.launch_id, signal.SIGKILL)
            end = time.monotonic() + KILL_WAIT
            while time.monotonic() < end and self._alive():
                self.watch(0.05)                  # each status read from its zombie first
                reap_groups(self._groups(), skip=self.msrun.pid)
        self._collect()
        took = time.monotonic() - t0
        if killed:
            why = "a second signal" if self.signals != signals else f"--grace {self.spec.grace:g} s"
            return f"SIGKILL after {t_kill:.1f} s ({why}) to {', '.join(killed)}"
        if ranks_by_themselves:
            return f"every rank ended {t_ranks:.1f} s after SIGTERM, the job {took:.1f} s after it"
        return f"the job ended {took:.1f} s after SIGTERM"

    def _collect(self) -> None:
        """Wait for msrun; record each process's end (its status from its zombie, before the
        zombies that are ours are reaped)."""
        for p in self._procs():
            p.update(self._resolve)
        try:
            self.msrun.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        for p in self._procs():
            p.update(self._resolve)
        reap_groups(self._groups(), skip=self.msrun.pid)
        for p in self._procs():
            p.update(self._resolve)

    # -- reporting
    def _write_status(self, **extra) -> None:
        status = {"launch_id": self.prep.launch_id, "log_dir": self.prep.log_dir,
                  "master_addr": self.prep.master_addr, "master_port": self.prep.master_port,
                  "msrun_pid": self.msrun.pid if self.msrun else None,
                  "process_groups": sorted({self.msrun.pid} | set(self.workers)) if self.msrun else [],
                  "ranks": {str(p.rank): p.pid for p in self.workers.values()},
                  "scheduler_pid": self.scheduler.pid if self.scheduler else None, **extra}
        tmp = self.prep.status_file + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(status, fh, indent=1)
        os.replace(tmp, self.prep.status_file)

    def _say(self, text: str) -> None:
        self.err.write(f"launch: {text}\n")
        self.err.flush()

    def _log_of(self, proc: Watched) -> str:
        if proc.rank is None:
            return os.path.join(self.prep.log_dir, "scheduler.log") if proc is self.scheduler \
                else self.prep.msrun_log
        return os.path.join(self.prep.log_dir, f"worker_{proc.rank}.log")

    def _show_tail(self, path: str) -> None:
        lines = last_lines(path)
        if lines:
            self._say(f"last lines of {path}:")
            self.err.write("".join(f"    {ln}\n" for ln in lines))

    # -- the loop
    def run(self) -> int:
        spec, prep = self.spec, self.prep
        become_subreaper()
        with open(prep.msrun_log, "wb") as log:
            self.msrun = subprocess.Popen(prep.argv, stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, env=prep.env,
                                          start_new_session=True, preexec_fn=die_with_parent)
        st = proc_stat(self.msrun.pid)
        self.msrun_start = st.start if st else 0
        self._write_status()
        world = spec.nproc * spec.nnodes
        self._say(f"{spec.nproc} of {world} ranks via msrun (master {prep.master_addr}:"
                  f"{prep.master_port}); streaming rank {prep.stream_rank}; logs in {prep.log_dir}")
        follower = LogFollower(os.path.join(prep.log_dir, f"worker_{prep.stream_rank}.log"), self.out)
        first: Optional[Watched] = None
        fault_deadline = done_deadline = None
        stop_reason, code = None, 0
        last_scan = -1.0
        handlers = self._install_signals()
        try:
            while True:
                now = time.monotonic()
                missing = len(self.workers) < spec.nproc or (
                    self.scheduler is None and spec.node_rank == 0 and now - self.t0 < 60)
                if missing and now - last_scan >= SCAN_EVERY:
                    self.discover()
                    last_scan = now
                self.watch(0.1)
                follower.pump()
                now = time.monotonic()
                msrun_done = self.msrun.poll() is not None
                failed = sorted((p for p in self._procs() if p.failed),
                                key=lambda p: (p.ended, p.rank if p.rank is not None else -1))
                if failed and first is None:
                    first = failed[0]
                    fault_deadline = now + spec.fault_timeout
                    self._say(f"{first.name} failed; stopping the job (the other ranks get up "
                              f"to {spec.fault_timeout:g} s to end)")
                workers_done = len(self.workers) == spec.nproc and \
                    all(p.ended is not None for p in self.workers.values())
                if self.signal is not None:
                    stop_reason = f"stopped by {signal.Signals(self.signal).name}"
                    code = 128 + self.signal
                    break
                if spec.timeout is not None and now - self.t0 > spec.timeout:
                    stop_reason, code = f"the job ran past --timeout {spec.timeout:g} s", 124
                    break
                if first is not None:
                    if workers_done or msrun_done or now >= fault_deadline:
                        break
                    continue
                if msrun_done:
                    if not workers_done or self.msrun.returncode != 0:
                        stop_reason = (f"msrun exited ({describe_exit(self.msrun.returncode)}) "
                                       f"with {sum(p.ended is not None for p in self.workers.values())}"
                                       f" of {spec.nproc} ranks ended")
                        code = shell_code(self.msrun.returncode)
                    break
                if workers_done:
                    if done_deadline is None:
                        done_deadline = now + spec.fault_timeout     # msrun waits for the scheduler
                    elif now >= done_deadline:
                        self._say(f"every rank finished but msrun did not exit within "
                                  f"{spec.fault_timeout:g} s; stopping it")
                        break
        finally:
            t_stop = time.monotonic()
            running = [p.name for p in self._procs() if p.ended is None]
            if stop_reason is not None and running:
                stop_reason += f" (still running: {', '.join(running)})"
            ended = self.teardown(follower)
            self._restore_signals(handlers)
            follower.pump(final=True)
            follower.close()
        return self._finish(first, stop_reason, code, t_stop, ended)

    def _finish(self, first: Optional[Watched], stop_reason: Optional[str], code: int,
                t_stop: float, ended: Optional[str]) -> int:
        prep = self.prep
        where = (f"logs in {prep.log_dir} (worker_<rank>.log per rank, "
                 f"{os.path.basename(prep.msrun_log)}"
                 f"{', scheduler.log' if self.spec.node_rank == 0 else ''})")
        outcome: Dict[str, object] = {"elapsed_s": round(t_stop - self.t0, 3)}
        if first is not None:
            code = shell_code(first.code)
            after = first.ended - self.t0
            self._say(f"{first.name} failed first, {after:.1f} s after the start: "
                      f"{describe_exit(first.code)}")
            self._show_tail(self._log_of(first))
            self._say(f"job stopped {t_stop - first.ended:.1f} s after that failure"
                      f"{'; ' + ended if ended else ''}; {where}")
            outcome["first_failure"] = {"name": first.name, "rank": first.rank, "pid": first.pid,
                                        "code": first.code, "after_s": round(after, 3)}
        elif stop_reason is not None:
            self._say(f"{stop_reason}; {ended + '; ' if ended else ''}{where}")
            if "msrun exited" in stop_reason:
                self._show_tail(prep.msrun_log)
        else:
            ranks = len(self.workers)
            self._say(f"{ranks} rank{'s' * (ranks != 1)} finished in {t_stop - self.t0:.1f} s; {where}")
        outcome["exit_code"] = code
        outcome["reason"] = stop_reason
        outcome["teardown"] = ended
        outcome["rank_exit"] = {str(p.rank): p.code for p in self.workers.values()
                                if p.rank is not None and p.known}
        self._write_status(outcome=outcome)
        return code

    def _install_signals(self):
        def handler(signum, frame):
            if self.signal is None:
                self.signal = signum
            self.signals += 1
        saved = {}
        try:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                saved[sig] = signal.signal(sig, handler)
        except ValueError:                          # not the main thread: the caller handles signals
            pass
        return saved

    @staticmethod
    def _restore_signals(saved) -> None:
        for sig, old in saved.items():
            signal.signal(sig, old)


def launch(spec: LaunchSpec, out: TextIO = None, err: TextIO = None) -> int:
    """Run the job; returns the exit status for the shell (0 = every rank succeeded)."""
    prep = prepare(spec)
    return Job(spec, prep, out or sys.stdout, err or sys.stderr).run()
