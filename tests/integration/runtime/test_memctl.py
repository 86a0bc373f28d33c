"""memctl, the command line on the client, against a runtime served over HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from memory_client.cli import main
from tests.integration.runtime.conftest import ADMIN_TOKEN, READ_TOKEN, WRITE_TOKEN

pytestmark = pytest.mark.integration


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_store_get_search_link_forget_stats(
    runtime_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEMORY_URL", runtime_url)
    monkeypatch.setenv("MEMORY_TOKEN", WRITE_TOKEN)
    code, out, _ = run(capsys, "store", "the user prefers green tea", "--tag", "prefs",
                       "--user-id", "u1", "--coordinate", "1,1")  # fmt: skip
    assert code == 0
    assert "1.0,1.0  version 1" in out
    run(capsys, "store", "the build runs on Fridays", "--coordinate", "2,2")
    code, out, _ = run(capsys, "get", "1,1")
    memory = json.loads(out)
    assert memory["tags"] == ["prefs"]
    assert memory["user_id"] == "u1"

    code, out, _ = run(capsys, "search", "green tea", "-k", "2")
    header, first, *_ = out.splitlines()
    assert header.split() == ["#", "score", "id", "coordinate", "text"]
    assert first.split()[2] == memory["id"][:8]
    assert first.endswith("the user prefers green tea")
    code, out, _ = run(capsys, "search", "tea", "--json", "--tag", "prefs")
    found = json.loads(out)
    assert [h["memory"]["id"] for h in found["hits"]] == [memory["id"]]

    code, out, _ = run(capsys, "link", "1,1", "2,2", "--type", "next", "--strength", "0.5")
    assert code == 0
    assert "-[next 0.5]->" in out
    code, out, _ = run(capsys, "stats", "--json")
    assert (json.loads(out)["memories"], json.loads(out)["links"]) == (2, 1)
    code, out, _ = run(capsys, "forget", "2,2")
    assert out.startswith("forgot ")
    code, out, _ = run(capsys, "stats")
    assert "memories      1 (episodic 1, semantic 0)" in out
    assert "links         0" in out


def test_errors_exit_nonzero_with_the_problem(
    runtime_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "--url", runtime_url, "--token", READ_TOKEN, "store", "x")
    assert code == 1
    assert "403" in err
    assert "write role" in err
    code, _, err = run(capsys, "--url", runtime_url, "--token", READ_TOKEN, "search", "x",
                       "-k", "500")  # fmt: skip
    assert code == 1
    assert "top_k" in err
    code, _, err = run(capsys, "--url", runtime_url, "--token", WRITE_TOKEN, "forget",
                       "--user-id", "u1")  # fmt: skip
    assert code == 1
    assert "admin" in err
    code, _, err = run(capsys, "--url", runtime_url, "stats")
    assert code == 2
    assert "no token" in err


def test_config_file_profiles_and_precedence(
    runtime_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        f'url = "http://127.0.0.1:1"\ntoken = "nope"\n\n'
        f'[profiles.acme]\nurl = "{runtime_url}"\ntoken = "{ADMIN_TOKEN}"\n'
    )
    monkeypatch.setenv("MEMCTL_CONFIG", str(config))
    monkeypatch.delenv("MEMORY_URL", raising=False)
    monkeypatch.delenv("MEMORY_TOKEN", raising=False)
    code, out, _ = run(capsys, "--profile", "acme", "stats", "--json")
    assert code == 0
    assert json.loads(out)["tenant"] == "acme"
    # the environment outranks the file, a flag outranks the environment
    monkeypatch.setenv("MEMORY_URL", runtime_url)
    code, _, err = run(capsys, "stats")
    assert code == 1
    assert "401" in err  # the file's token "nope"
    monkeypatch.setenv("MEMORY_TOKEN", "also-wrong")
    code, _, _ = run(capsys, "--token", READ_TOKEN, "stats")
    assert code == 0
    code, _, err = run(capsys, "--profile", "missing", "stats")
    assert code == 2
    assert "[profiles.missing]" in err
