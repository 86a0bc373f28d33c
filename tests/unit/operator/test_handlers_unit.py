"""handlers.py: Result -> Kopf error semantics, backoff."""

from __future__ import annotations

import kopf
import pytest

from memory_operator.handlers import MAX_BACKOFF, Listings, backoff, raise_for
from memory_operator.reconcile import Result


def test_backoff_grows_and_is_capped() -> None:
    delays = [backoff(r) for r in range(12)]
    assert delays[:3] == [5.0, 10.0, 20.0]
    assert delays == sorted(delays)
    assert max(delays) == MAX_BACKOFF


def test_permanent_error_is_not_retried() -> None:
    with pytest.raises(kopf.PermanentError, match="InvalidSpec: bad"):
        raise_for(Result({}, error="permanent", reason="InvalidSpec", message="bad"), 0)


def test_temporary_error_backs_off() -> None:
    with pytest.raises(kopf.TemporaryError) as err:
        raise_for(Result({}, error="temporary", reason="PostgresUnavailable", message="x"), 2)
    assert err.value.delay == 20.0


def test_ready_conflict_and_waiting_for_deployment_do_not_raise() -> None:
    # Waiting for a rollout is driven by the Deployment watch, not by retries.
    raise_for(Result({}, reason="DeploymentNotAvailable", message="0/1", waiting=True), 9)
    raise_for(Result({}, ready=True, reason="Ready"), 0)
    raise_for(Result({}, reason="TenantConflict", message="older claim"), 0)


def _event(type_: str | None, uid: str, version: str) -> dict[str, object]:
    return {"type": type_, "object": {"metadata": {"uid": uid, "resourceVersion": version}}}


def test_listed_deployments_are_news_only_when_they_moved_while_unwatched() -> None:
    listings = Listings()
    assert not listings.is_news(_event(None, "a", "1"))  # first listing: resume covers it
    assert listings.is_news(_event("MODIFIED", "a", "2"))
    assert not listings.is_news(_event(None, "a", "2"))  # re-listed, unchanged
    assert listings.is_news(_event(None, "a", "5"))  # changed while the watch was down
    assert listings.is_news(_event("ADDED", "b", "7"))
    assert listings.is_news(_event("DELETED", "b", "8"))
    assert not listings.is_news(_event(None, "b", "9"))  # not seen since it was deleted
