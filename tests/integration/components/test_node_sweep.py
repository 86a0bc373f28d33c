"""A real node whose test session was killed leaves host state behind (processes,
mounts, a bridge, cgroups); the next node sweeps it, and never a live node's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import node
from tests.servers._process import REPO_ROOT

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _link_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


def _mounted(path: Path) -> bool:
    return subprocess.run(["mountpoint", "-q", str(path)], check=False).returncode == 0


def _die_holding_claim(claims: Path, bridge: str, workdir: Path, cgroup: str) -> None:
    """A session that took its claim and was SIGKILLed before any clean-up."""
    code = (
        "import os, pathlib\n"
        "from tests.servers import node\n"
        f"node.CLAIMS_DIR = pathlib.Path({str(claims)!r})\n"
        f"with node._claim({bridge!r}, pathlib.Path({str(workdir)!r}), {cgroup!r}):\n"
        "    os.kill(os.getpid(), 9)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=False)
    assert proc.returncode == -9


def test_abandoned_node_state_is_swept_and_a_live_one_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    claims = tmp_path / "claims"
    monkeypatch.setattr(node, "CLAIMS_DIR", claims)
    tag = os.getpid() % 100000
    dead_bridge, live_bridge = f"sfdead{tag}", f"sflive{tag}"
    dead_cgroup = f"/somafractal-sweeptest-{tag}"
    workdir = tmp_path / "dead-node"
    (workdir / "mnt").mkdir(parents=True)
    subprocess.run(["ip", "link", "add", dead_bridge, "type", "bridge"], check=True)
    subprocess.run(["ip", "link", "add", live_bridge, "type", "bridge"], check=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(workdir / "mnt")], check=True)
    node._make_cgroups(dead_cgroup)
    # its containerd (names the work dir) and a container (sits in its cgroup)
    daemon = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", str(workdir)])
    container = subprocess.Popen(["sleep", "300"])
    pids_cgroup = Path("/sys/fs/cgroup/pids") / dead_cgroup.strip("/")
    (pids_cgroup / "cgroup.procs").write_text(str(container.pid))
    try:
        _die_holding_claim(claims, dead_bridge, workdir, dead_cgroup)
        assert (claims / f"{dead_bridge}.json").exists()
        with node._claim(live_bridge, tmp_path / "live-node", "/somafractal-live"):
            node._sweep_abandoned_nodes()
            assert _link_exists(live_bridge)
            assert (claims / f"{live_bridge}.json").exists()
        for proc in (daemon, container):
            proc.wait(timeout=10)  # reaped: it was killed
            assert not _alive(proc.pid)
        assert not _link_exists(dead_bridge)
        assert not _mounted(workdir / "mnt")
        assert not pids_cgroup.exists()
        assert not (claims / f"{dead_bridge}.json").exists()
    finally:
        for proc in (daemon, container):
            proc.kill()
        subprocess.run(["umount", "-l", str(workdir / "mnt")], check=False)
        node._remove_cgroups(dead_cgroup)
        for bridge in (dead_bridge, live_bridge):
            subprocess.run(["ip", "link", "del", bridge], check=False, capture_output=True)
