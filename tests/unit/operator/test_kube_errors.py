"""The kube adapter's answer -> typed error mapping (ports.py has the meanings)."""

from __future__ import annotations

import pytest

from memory_operator.adapters.kube import error_for
from memory_operator.ports import KubeBusy, KubeConflict, KubeError, KubeRejected


@pytest.mark.parametrize(
    ("status", "kind", "temporary"),
    [
        (409, KubeConflict, True),
        (429, KubeBusy, True),
        (500, KubeBusy, True),
        (503, KubeBusy, True),
        (400, KubeRejected, False),
        (401, KubeRejected, False),
        (403, KubeRejected, False),
        (404, KubeRejected, False),  # a GET's 404 is None before it gets here
        (422, KubeRejected, False),
    ],
)
def test_status_to_typed_error(status: int, kind: type[KubeError], temporary: bool) -> None:
    err = error_for(status, "message")
    assert type(err) is kind
    assert err.temporary is temporary
    assert (err.status, err.message) == (status, "message")
