"""Start, find and stop the local stack's processes by the PID files the stack wrote.

A process counts as ours only while its PID file exists AND that PID's command line still holds
the marker we started it with (a PID can be reused by an unrelated process after a reboot).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from streamrec.errors import StackError


@dataclass(frozen=True)
class ManagedProcess:
    name: str
    pid_file: Path
    log_file: Path
    marker: str  # a whole word of the process's command line (a path, or host:port)

    def pid(self) -> int | None:
        """The PID if our process is alive, else None (and a stale PID file is removed)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            stat = Path(f"/proc/{pid}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            self.pid_file.unlink(missing_ok=True)
            return None
        # A zombie (state Z) has exited; treat it as gone.
        if self.marker not in cmdline.split() or stat.rsplit(")", 1)[1].split()[0] == "Z":
            self.pid_file.unlink(missing_ok=True)
            return None
        return pid

    def start(self, cmd: list[str], env: dict[str, str] | None = None) -> int:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            # A new session: the process outlives `streamrec stack up` and ignores its Ctrl-C.
            proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=env,
            )
        self.pid_file.write_text(str(proc.pid))
        return proc.pid

    def stop(self, timeout_s: float = 30.0) -> bool:
        """SIGTERM, wait, then SIGKILL. True if a process of ours was stopped."""
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not _alive(pid):
                break
            time.sleep(0.2)
        else:
            os.kill(pid, signal.SIGKILL)
            for _ in range(50):
                if not _alive(pid):
                    break
                time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)
        return True

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def wait_until(check: object, proc: ManagedProcess, pid: int, timeout_s: float, what: str) -> None:
    """Poll ``check()`` until true; fail early with the log tail if the process dies."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            raise StackError(
                f"{what} exited during start-up; last lines of {proc.log_file}:\n{proc.log_tail()}"
            )
        if check():  # type: ignore[operator]
            return
        time.sleep(0.3)
    raise StackError(
        f"{what} not ready after {timeout_s:.0f}s; last lines of {proc.log_file}:\n"
        f"{proc.log_tail()}"
    )
