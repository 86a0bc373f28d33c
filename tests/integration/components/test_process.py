"""The launcher plumbing every fixture relies on: failure messages and process-group kills."""

from __future__ import annotations

import os
import time

import pytest

from tests.servers._process import ServerStartError, log_dir, spawn, wait_until

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_start_failure_names_the_log_and_shows_its_tail() -> None:
    log = log_dir("selftest") / "dies.log"
    proc = spawn("dies", ["sh", "-c", "echo 'boom: bad config line 7'; exit 3"], log)
    try:
        with pytest.raises(ServerStartError) as info:
            wait_until(proc, lambda: False, timeout=30, what="never")
    finally:
        proc.stop()
    message = str(info.value)
    assert str(log) in message
    assert "exited with 3" in message
    assert "boom: bad config line 7" in message


def test_stop_kills_the_whole_process_group() -> None:
    log = log_dir("selftest") / "group.log"
    pid_file = log.with_suffix(".child")
    # A child that ignores SIGTERM: only the group-wide SIGKILL fallback ends it.
    script = f"sh -c 'trap \"\" TERM; echo $$ > {pid_file}; sleep 300' & wait"
    proc = spawn("group", ["sh", "-c", script], log)
    deadline = time.monotonic() + 10
    while not (pid_file.exists() and pid_file.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int(pid_file.read_text())
    assert _alive(child)
    proc.stop(grace=1.0)
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(proc.pid)
    assert not _alive(child)
