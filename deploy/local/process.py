"""A child process with a log file, a readiness check, and a clean or brutal stop.

Every local service (Kafka, anvil, PostgreSQL, Triton) is one of these: tests and the demo start
the real program on free loopback ports, wait until it answers, and stop it afterwards. `kill()`
is there for fault-injection tests that must crash a service the way production would.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from deploy.local.errors import ServiceStartError


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class ManagedProcess:
    """One child process of a local service.

    The process gets its own session so that stopping it also stops anything it forked
    (Triton's Python backend stubs, for instance).
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        user: str | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.user = user
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        if self.running():
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                user=self.user,
                start_new_session=True,
            )
        except OSError as exc:
            raise ServiceStartError(f"{self.name}: cannot execute {self.argv[0]}: {exc}") from exc
        finally:
            log.close()

    def wait_ready(self, check: Callable[[], bool], timeout: float, interval: float = 0.1) -> float:
        """Poll `check` until it returns True; return the seconds it took.

        Fails fast, with the end of the log, when the process exits or the time runs out, or
        when `check` itself raises `ServiceStartError` (a state that waiting cannot mend).
        """
        started = time.monotonic()
        deadline = started + timeout
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise ServiceStartError(
                    f"{self.name} exited with code {self.proc.returncode} before it was ready; "
                    f"log {self.log_path}:\n{tail(self.log_path)}"
                )
            try:
                if check():
                    return time.monotonic() - started
            except ServiceStartError:
                self.stop()  # the probe found the service broken for good: no point waiting
                raise
            except Exception:  # noqa: S110 - any other failure of the probe means "not yet"
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise ServiceStartError(
                    f"{self.name} not ready after {timeout:.0f}s; log {self.log_path}:\n"
                    f"{tail(self.log_path)}"
                )
            time.sleep(interval)

    def _signal_group(self, sig: int) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the process group, then SIGKILL what is left after `timeout` seconds."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.proc.wait(10)
        # Children that outlived their parent still belong to the group.
        self._signal_group(signal.SIGKILL)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL the whole process group at once: a crash, for fault-injection tests."""
        if self.proc is None:
            return
        self._signal_group(signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None
