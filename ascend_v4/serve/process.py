"""A server in a child process for tests and benchmarks: started in its own process group on
127.0.0.1, waited for with a deadline, stopped by SIGTERM (then SIGKILL of the group) by id."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from typing import List, Optional

import httpx


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`python -m ascend_v4.serve <args> --host 127.0.0.1 --port P`, logging to `log_path`."""

    def __init__(self, args: List[str], log_path: str, port: Optional[int] = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        argv = [sys.executable, "-m", "ascend_v4.serve", *args, "--host", "127.0.0.1", "--port", str(self.port)]
        env = dict(os.environ, GLOG_v="3")
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)

    def wait_ready(self, timeout_s: float) -> None:
        """Until GET /health answers 200; RuntimeError with the log's tail if the process dies or
        the deadline passes."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"server not ready after {timeout_s} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        with open(self.log_path, errors="replace") as fh:
            return "".join(fh.readlines()[-lines:])

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout_s: float = 20.0) -> int:
        """SIGTERM, wait up to timeout_s, then SIGKILL the whole process group -> exit code."""
        self.terminate()
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)     # the group: anything the server started
        except ProcessLookupError:
            pass
        code = self.proc.wait()
        self._log.close()
        return code
