"""Shared plumbing for the test server launchers: ports, log dirs, process groups.

Every server runs as a direct child in its own process group so that stopping it
(SIGTERM, then SIGKILL) also reaches anything it forked. The child also gets
PR_SET_PDEATHSIG=SIGKILL so a pytest that is itself killed (SIGKILL, OOM) does
not leave servers eating the machine's two cores.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

REPO_ROOT = Path(__file__).resolve().parents[2]
LOG_ROOT = Path(os.environ.get("SOMAFRACTAL_TEST_LOGS", REPO_ROOT / ".test-logs"))
CACHE_ROOT = Path(
    os.environ.get(
        "SOMAFRACTAL_CACHE",
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "somafractal",
    )
)

_PR_SET_PDEATHSIG = 1


class ServerStartError(RuntimeError):
    """A test server did not come up; the message names its log files."""


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the server binds it next).

    Chosen at random below the kernel's ephemeral range: a port the kernel hands out
    for bind(0) could meanwhile become some client connection's local port, while
    these are only taken by other servers choosing the same way."""
    low, _high = _ephemeral_range()
    candidates = range(15000, low) if low > 16000 else range(low, 65536)
    for port in random.sample(candidates, 200):
        # never the same port twice in one process: a server may bind its port
        # long after it was chosen (kube-controller-manager's waits for the
        # apiserver), and another chosen meanwhile must not be that one
        if port in _HANDED_OUT:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            with _HANDED_OUT_LOCK:
                if port in _HANDED_OUT:
                    continue
                _HANDED_OUT.add(port)
            return port
    raise ServerStartError("no free TCP port found on 127.0.0.1")


_HANDED_OUT: set[int] = set()
_HANDED_OUT_LOCK = threading.Lock()


# One directory per pytest process, so engineers running tests at the same time in one
# checkout do not overwrite each other's logs: .test-logs/<component>/<run id>/.
RUN_ID = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
KEEP_RUNS = 5


def log_dir(component: str) -> Path:
    """`.test-logs/<component>/<run id>/`, created; the newest runs are kept for post-mortems."""
    base = LOG_ROOT / component
    path = base / RUN_ID
    path.mkdir(parents=True, exist_ok=True)
    runs = sorted(
        (p for p in base.iterdir() if p.is_dir() and not p.is_symlink()),
        key=lambda p: p.stat().st_mtime,
    )
    for old in runs[:-KEEP_RUNS]:
        if old != path and not _pid_alive(old.name.rsplit("-", 1)[-1]):
            shutil.rmtree(old, ignore_errors=True)
    latest = base / "latest"
    with contextlib.suppress(OSError):
        if latest.is_symlink() or latest.exists():
            latest.unlink()
        latest.symlink_to(RUN_ID)
    return path


def _pid_alive(pid_text: str) -> bool:
    try:
        os.kill(int(pid_text), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"<{path} unreadable>"
    return "\n".join(text.splitlines()[-lines:])


def _pdeathsig_preexec() -> Callable[[], None] | None:
    # Linux only; resolved before fork so the child does no imports.
    if not sys.platform.startswith("linux"):
        return None
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return None
    libc = ctypes.CDLL(libc_name, use_errno=True)
    prctl = libc.prctl

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    return preexec


@dataclass
class ManagedProcess:
    """A server process in its own process group, output going to `log_path`."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    _log_file: IO[bytes] = field(repr=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the whole group, SIGKILL it after `grace` seconds."""
        try:
            if self.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.popen.wait(grace)
            # Children of the leader may outlive it; the group id stays valid for them.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(5)
        finally:
            self._log_file.close()

    def failure(self, what: str, extra_logs: Sequence[Path] = ()) -> ServerStartError:
        status = "running" if self.alive() else f"exited with {self.popen.returncode}"
        parts = [f"{self.name}: {what} (process {status}); log: {self.log_path}"]
        parts += [f"also see: {p}" for p in extra_logs]
        parts.append(f"--- last lines of {self.log_path} ---\n{tail(self.log_path)}")
        return ServerStartError("\n".join(parts))


def stop_popen(proc: subprocess.Popen[bytes], grace: float = 30.0) -> None:
    """SIGTERM a plain child process (no group of its own), SIGKILL it after `grace` s."""
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def spawn(
    name: str,
    argv: Sequence[str | os.PathLike[str]],
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    user: str | None = None,
) -> ManagedProcess:
    """Start `argv` in a new process group with stdout+stderr appended to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_file = log_path.open("ab")
    log_file.write(f"\n===== {time.strftime('%H:%M:%S')} {' '.join(map(str, argv))}\n".encode())
    log_file.flush()
    try:
        popen = subprocess.Popen(
            [str(a) for a in argv],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            user=user,
            process_group=0,
            preexec_fn=_pdeathsig_preexec(),  # only calls prctl; see module docstring
        )
    except OSError as exc:
        log_file.close()
        raise ServerStartError(f"{name}: cannot execute {argv[0]}: {exc}") from exc
    return ManagedProcess(name=name, popen=popen, log_path=log_path, _log_file=log_file)


def wait_until(
    proc: ManagedProcess,
    ready: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    interval: float = 0.2,
    extra_logs: Sequence[Path] = (),
) -> None:
    """Poll `ready()` until true; raise with the log tail if the process dies or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        if not proc.alive():
            raise proc.failure(f"exited while waiting for {what}", extra_logs)
        try:
            if ready():
                return
        except Exception:  # not ready yet; the server log has the details
            pass
        if time.monotonic() > deadline:
            raise proc.failure(f"not ready after {timeout:.0f}s waiting for {what}", extra_logs)
        time.sleep(interval)


@contextlib.contextmanager
def stopping(*procs: ManagedProcess) -> Iterator[None]:
    """Stop the given processes (in reverse order) when the block exits, however it exits."""
    try:
        yield
    finally:
        for proc in reversed(procs):
            proc.stop()


@contextlib.contextmanager
def cache_lock(name: str) -> Iterator[None]:
    """An exclusive lock in the cache dir: two pytest sessions on one machine must not run
    a provisioning script (build-kube.sh, fetch-kafka.sh) at the same time."""
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    with (CACHE_ROOT / f".{name}.lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0
