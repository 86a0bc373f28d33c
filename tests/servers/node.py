"""A real node for the test cluster: kube-scheduler, containerd and a kubelet.

Pods run for real: containerd (Debian's package) runs them with runc, the CNI
bridge plugin puts them on a bridge this fixture creates, and the images come
from scripts/build-images.sh (OCI archives imported into this containerd). The
kubelet and kube-scheduler are built like the control plane
(`scripts/build-kube.sh node`).

Settings this machine kind needs, each seen failing without it
(docs/TESTING.md): the kubelet accepts a cgroup v1 host (`failCgroupV1: false`);
containerd clamps negative oom_score_adj (no CAP_SYS_RESOURCE here:
`restrict_oom_score_adj`); the node IP is the bridge's address (the kubelet
refuses loopback); the API server reaches the kubelet by InternalIP (set by
run_kube for a real node).

Every host change is undone on exit: pods deleted, processes stopped,
containerd's tasks killed, mounts under the work dir unmounted, the pods'
network namespaces and the bridge deleted, the node's cgroups removed, and, by
the last node on the machine, the kubelet's iptables chains and containerd's
state outside the work dir. A session killed before its clean-up leaves a claim
file that is no longer locked; the next node on the machine sweeps what it
names (processes, mounts, network namespaces, cgroups, bridge). Several test
sessions can run nodes at once: each has its own bridge, subnet, ports and
cgroup root.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tests.servers._process import (
    CACHE_ROOT,
    REPO_ROOT,
    ServerStartError,
    cache_lock,
    free_port,
    port_open,
    spawn,
    stopping,
    wait_until,
)

if TYPE_CHECKING:
    from tests.servers.kube import KubeCluster

BUILD_KUBE = REPO_ROOT / "scripts" / "build-kube.sh"
BUILD_IMAGES = REPO_ROOT / "scripts" / "build-images.sh"
HOST_PACKAGES = REPO_ROOT / "scripts" / "install-host-packages.sh"
CNI_BIN_DIR = Path("/usr/lib/cni")
RUNC = Path("/usr/sbin/runc")
NODES_LOCK = CACHE_ROOT / ".real-nodes.lock"  # shared while a node runs; see _last_node
CLAIMS_DIR = CACHE_ROOT / "real-nodes"  # one locked claim per running node; see _claim


@dataclass(frozen=True)
class Images:
    """Image references loaded into the node (built by scripts/build-images.sh)."""

    runtime: str
    operator: str
    pause: str


@dataclass(frozen=True)
class Node:
    name: str
    ip: str  # the bridge's address: node IP, and the host address pods reach
    subnet: str  # pods' addresses
    bridge: str
    images: Images


def build_images() -> dict[str, tuple[str, Path]]:
    """Run scripts/build-images.sh (a no-op for images already in the cache);
    return {name: (reference, OCI archive)}."""
    with cache_lock("build-images"):
        out = subprocess.run(
            [str(BUILD_IMAGES)], capture_output=True, text=True, check=False, timeout=3600
        )
    if out.returncode != 0:
        raise ServerStartError(f"node: {BUILD_IMAGES} failed:\n{out.stderr[-3000:]}")
    images = {}
    for line in out.stdout.splitlines():
        name, ref, archive = line.split()
        images[name] = (ref, Path(archive))
    return images


def node_bin_dir() -> Path:
    """kubelet + kube-scheduler, built once (`scripts/build-kube.sh node`)."""
    with cache_lock("build-kube"):
        out = subprocess.run(
            [str(BUILD_KUBE), "node"], capture_output=True, text=True, check=False, timeout=3 * 3600
        )
    if out.returncode != 0:
        raise ServerStartError(f"node: {BUILD_KUBE} node failed:\n{out.stderr[-3000:]}")
    return Path(out.stdout.strip().splitlines()[-1])


def _run(*argv: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, check=False, timeout=120
    )
    if check and proc.returncode != 0:
        raise ServerStartError(f"node: {' '.join(map(str, argv))}: {proc.stderr.strip()}")
    return proc


def _check_host() -> None:
    if os.geteuid() != 0:
        raise ServerStartError("node: a real kubelet and containerd need root")
    for tool in ("containerd", "ctr", "ip", "iptables", str(RUNC), str(CNI_BIN_DIR / "bridge")):
        if shutil.which(tool) is None and not Path(tool).exists():
            raise ServerStartError(f"node: {tool} missing; run {HOST_PACKAGES}")


def _free_subnet() -> tuple[str, str, str]:
    """(bridge, gateway/node IP, subnet): a 10.244.<n>.0/24 no interface or route uses."""
    routes = _run("ip", "-o", "route", "show").stdout + _run("ip", "-o", "addr").stdout
    for n in range(0, 250):
        subnet = f"10.244.{n}.0/24"
        if f"10.244.{n}." not in routes and not Path(f"/sys/class/net/sfnode{n}").exists():
            return f"sfnode{n}", f"10.244.{n}.1", subnet
    raise ServerStartError("node: no free 10.244.<n>.0/24 subnet")


@contextmanager
def _bridge() -> Iterator[tuple[str, str, str]]:
    with cache_lock("real-node-bridge"):  # two sessions must not pick the same subnet
        _sweep_abandoned_nodes()
        bridge, ip, subnet = _free_subnet()
        _run("ip", "link", "add", bridge, "type", "bridge")
    try:
        _run("ip", "addr", "add", f"{ip}/24", "dev", bridge)
        _run("ip", "link", "set", bridge, "up")
        yield bridge, ip, subnet
    finally:
        _run("ip", "link", "del", bridge, check=False)


@contextmanager
def _node_slot() -> Iterator[None]:
    """Held (shared) while this node runs; on exit, the node that can take it
    exclusively is the last one and removes the state all nodes share."""
    NODES_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with NODES_LOCK.open("w") as f:
        fcntl.flock(f, fcntl.LOCK_SH)
        try:
            yield
        finally:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return
            _remove_shared_host_state()


def _remove_shared_host_state() -> None:
    """What the kubelet, containerd and CNI leave outside the work dir."""
    for ipt in ("iptables", "ip6tables"):
        if shutil.which(ipt) is None:
            continue
        for hook in ("INPUT", "OUTPUT"):
            unhook = (ipt, "-t", "filter", "-D", hook, "-j", "KUBE-FIREWALL")
            while _run(*unhook, check=False).returncode == 0:
                pass
        for table in ("filter", "nat", "mangle"):
            rules = _run(ipt, "-t", table, "-S", check=False).stdout.splitlines()
            chains = [r.split()[1] for r in rules if r.startswith("-N KUBE-")]
            for chain in chains:
                _run(ipt, "-t", table, "-F", chain, check=False)
            for chain in chains:
                _run(ipt, "-t", table, "-X", chain, check=False)
    for path in ("/run/containerd", "/var/lib/cni"):
        shutil.rmtree(path, ignore_errors=True)
    netns = Path("/run/netns")
    if netns.is_dir() and not any(netns.iterdir()):
        with suppress(OSError):
            if _run("mountpoint", "-q", netns, check=False).returncode == 0:
                _run("umount", netns, check=False)
            netns.rmdir()


@contextmanager
def _claim(bridge: str, workdir: Path, cgroup_root: str) -> Iterator[None]:
    """Record this node's host state in a file locked while the node runs. A session
    killed before its clean-up (SIGKILL, a CI timeout) leaves the file unlocked, and
    the next node swept it: see _sweep_abandoned_nodes."""
    CLAIMS_DIR.mkdir(parents=True, exist_ok=True)
    claim = CLAIMS_DIR / f"{bridge}.json"
    with claim.open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(json.dumps({"bridge": bridge, "workdir": str(workdir), "cgroup": cgroup_root}))
        f.flush()
        try:
            yield
        finally:
            claim.unlink(missing_ok=True)


def _sweep_abandoned_nodes() -> None:
    """Undo the host changes of nodes whose session died without cleaning up."""
    if not CLAIMS_DIR.is_dir():
        return
    for claim in CLAIMS_DIR.glob("*.json"):
        with claim.open("r+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its session is alive
            try:
                state = json.loads(f.read() or "{}")
            except ValueError:
                state = {}
            if state:
                _kill_cgroup_processes(state["cgroup"])
                _kill_processes_mentioning(state["workdir"])
                _unmount_under(Path(state["workdir"]))
                _delete_netns_of(state["bridge"])
                _remove_cgroups(state["cgroup"])
                _run("ip", "link", "del", state["bridge"], check=False)
            claim.unlink(missing_ok=True)


def _kill_cgroup_processes(cgroup_root: str) -> None:
    """SIGKILL the containers' processes: every pid in the node's cgroups."""
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        top = hierarchy / cgroup_root.strip("/")
        if top.is_dir():
            for procs in top.rglob("cgroup.procs"):
                for pid in procs.read_text().split():
                    with suppress(ProcessLookupError):
                        os.kill(int(pid), 9)


def _kill_processes_mentioning(workdir: str) -> None:
    """SIGKILL containerd, its shims, the kubelet and the scheduler of a dead session:
    each names the node's work dir on its command line."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        with suppress(OSError):
            if workdir.encode() in (proc / "cmdline").read_bytes():
                with suppress(ProcessLookupError):
                    os.kill(int(proc.name), 9)


def _containerd_config(workdir: Path, pause: str) -> str:
    d = workdir / "containerd"
    return f"""version = 2
root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[debug]
  address = "{d}/debug.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  # No CAP_SYS_RESOURCE here: clamp negative oom_score_adj (pause -998, Guaranteed -997).
  restrict_oom_score_adj = true
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "{RUNC}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{workdir}/cni/net.d"
"""


def _cni_config(workdir: Path, bridge: str, subnet: str) -> str:
    return json.dumps(
        {
            "cniVersion": "0.4.0",
            "name": bridge,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": bridge,
                    "isGateway": True,
                    "ipMasq": False,  # pods reach only this host, never further
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "dataDir": str(workdir / "cni" / "ipam"),
                        "ranges": [[{"subnet": subnet}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                    },
                }
            ],
        },
        indent=2,
    )


def _kubelet_config(workdir: Path, node_ip: str, port: int, healthz: int, cgroup_root: str) -> str:
    return json.dumps(
        {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": cgroup_root,
            "failCgroupV1": False,  # this machine kind is cgroup v1 hybrid
            "failSwapOn": False,
            "containerRuntimeEndpoint": f"unix://{workdir}/containerd/containerd.sock",
            "address": node_ip,
            "port": port,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": healthz,
            # Only reachable on this test's bridge; the API server's logs/exec go through it.
            "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
            "authorization": {"mode": "AlwaysAllow"},
            "staticPodPath": str(workdir / "kubelet" / "manifests"),
            "podLogsDir": str(workdir / "kubelet" / "pod-logs"),
            "resolvConf": "/etc/resolv.conf",
            "serializeImagePulls": False,
            # A shared build machine: disk and memory pressure are not this test's business.
            "evictionHard": {
                "memory.available": "50Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
        }
    )


def _kill_containers(ctr: list[str]) -> None:
    for task in _run(*ctr, "tasks", "ls", "-q", check=False).stdout.split():
        _run(*ctr, "tasks", "kill", "-s", "SIGKILL", task, check=False)
    time.sleep(0.5)
    for task in _run(*ctr, "tasks", "ls", "-q", check=False).stdout.split():
        _run(*ctr, "tasks", "rm", "-f", task, check=False)
    for container in _run(*ctr, "containers", "ls", "-q", check=False).stdout.split():
        _run(*ctr, "containers", "rm", container, check=False)


def _unmount_under(path: Path) -> None:
    """Unmount everything mounted below `path`, deepest first."""
    prefix = str(path.resolve()) + "/"
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        _run("umount", "-l", point, check=False)


def _make_cgroups(cgroup_root: str) -> None:
    """The kubelet wants its cgroup root present in every hierarchy (cgroupfs driver)."""
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        if (hierarchy / "cgroup.procs").exists():
            (hierarchy / cgroup_root.strip("/")).mkdir(exist_ok=True)


def _remove_cgroups(cgroup_root: str) -> None:
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        top = hierarchy / cgroup_root.strip("/")
        if not top.is_dir():
            continue
        for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            with suppress(OSError):
                d.rmdir()
        with suppress(OSError):
            top.rmdir()


def _delete_netns_of(bridge: str) -> None:
    """The pods' network namespaces whose veth sits on `bridge` (left if the kubelet died)."""
    netns = Path("/run/netns")
    if not netns.is_dir():
        return
    for ns in netns.iterdir():
        links = _run("ip", "-n", ns.name, "-o", "link", check=False).stdout
        addrs = _run("ip", "-n", ns.name, "-o", "addr", check=False).stdout
        if "eth0" in links and bridge.replace("sfnode", "10.244.") + "." in addrs:
            _run("ip", "netns", "del", ns.name, check=False)


@contextmanager
def run_node(
    cluster: KubeCluster, workdir: Path, logs: Path, *, startup_timeout: float = 180.0
) -> Iterator[Node]:
    """Start kube-scheduler, containerd and a kubelet for `cluster`, load the
    project's images, wait until the node is Ready; undo everything on exit."""
    _check_host()
    bin_dir = node_bin_dir()
    built = build_images()
    images = Images(
        runtime=built["memory-runtime"][0],
        operator=built["memory-operator"][0],
        pause=built["pause"][0],
    )
    for sub in ("containerd", "cni/net.d", "cni/ipam", "kubelet/manifests", "kubelet/root"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        stack.enter_context(_node_slot())
        bridge, node_ip, subnet = stack.enter_context(_bridge())
        node_name = f"node-{bridge}"
        cgroup_root = f"/somafractal-{bridge}"
        stack.enter_context(_claim(bridge, workdir, cgroup_root))
        stack.callback(_remove_cgroups, cgroup_root)
        _make_cgroups(cgroup_root)
        stack.callback(_delete_netns_of, bridge)
        stack.callback(_unmount_under, workdir)

        (workdir / "containerd" / "config.toml").write_text(
            _containerd_config(workdir, images.pause)
        )
        (workdir / "cni" / "net.d" / "10-bridge.conflist").write_text(
            _cni_config(workdir, bridge, subnet)
        )
        sock = workdir / "containerd" / "containerd.sock"
        containerd = spawn(
            "containerd",
            ["containerd", "--config", workdir / "containerd" / "config.toml"],
            logs / "containerd.log",
        )
        stack.enter_context(stopping(containerd))
        ctr = ["ctr", "-a", str(sock), "-n", "k8s.io"]
        stack.callback(_kill_containers, ctr)  # runs before containerd stops
        wait_until(
            containerd,
            lambda: sock.exists() and _run(*ctr, "version", check=False).returncode == 0,
            timeout=startup_timeout,
            what="containerd",
        )
        for name, (ref, archive) in built.items():
            # the archive names the image (org.opencontainers.image.ref.name = ref)
            _run(*ctr, "images", "import", archive)
            if _run(*ctr, "images", "ls", "-q", check=False).stdout.count(ref) == 0:
                raise ServerStartError(f"node: {name} ({ref}) not in containerd after import")

        scheduler = spawn(
            "kube-scheduler",
            [
                bin_dir / "kube-scheduler",
                f"--kubeconfig={cluster.kubeconfig}",
                f"--authentication-kubeconfig={cluster.kubeconfig}",
                f"--authorization-kubeconfig={cluster.kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                f"--cert-dir={workdir / 'scheduler-certs'}",
                "--v=1",
            ],
            logs / "kube-scheduler.log",
        )
        stack.enter_context(stopping(scheduler))

        port, healthz = free_port(), free_port()
        (workdir / "kubelet-config.json").write_text(
            _kubelet_config(workdir, node_ip, port, healthz, cgroup_root)
        )
        kubelet = spawn(
            "kubelet",
            [
                bin_dir / "kubelet",
                f"--config={workdir / 'kubelet-config.json'}",
                f"--kubeconfig={cluster.kubeconfig}",
                f"--root-dir={workdir / 'kubelet' / 'root'}",
                f"--cert-dir={workdir / 'kubelet' / 'pki'}",
                f"--hostname-override={node_name}",
                f"--node-ip={node_ip}",
                "--v=1",
            ],
            logs / "kubelet.log",
        )
        # Pods go first, so the kubelet tears down their sandboxes, volumes and CNI.
        stack.enter_context(stopping(kubelet))
        stack.callback(_delete_pods, cluster, node_name)

        def node_ready() -> bool:
            if not port_open("127.0.0.1", healthz):
                return False
            node = cluster.get_json(f"/api/v1/nodes/{node_name}")
            return any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in node.get("status", {}).get("conditions", [])
            )

        wait_until(
            kubelet,
            _ignoring_errors(node_ready),
            timeout=startup_timeout,
            what=f"node {node_name} Ready",
            interval=0.5,
            extra_logs=[logs / "containerd.log"],
        )
        yield Node(name=node_name, ip=node_ip, subnet=subnet, bridge=bridge, images=images)


def _ignoring_errors(check: object) -> object:
    def wrapped() -> bool:
        try:
            return bool(check())  # type: ignore[operator]
        except Exception:
            return False

    return wrapped


def _delete_pods(cluster: KubeCluster, node_name: str) -> None:
    """Delete every pod on the node and wait (bounded) until the kubelet let them go."""
    cluster.kubectl_run(
        "delete", "pods", "--all-namespaces", "--all",
        f"--field-selector=spec.nodeName={node_name}",
        "--grace-period=2", "--wait=true", "--timeout=60s", check=False,
    )  # fmt: skip
