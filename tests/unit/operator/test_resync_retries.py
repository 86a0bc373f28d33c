"""resync.Retries: a pass that failed temporarily is due again after the backoff
(handlers.backoff, as Kopf's retries), with its retry count; success forgets it."""

from __future__ import annotations

from memory_operator.handlers import backoff
from memory_operator.reconcile import Result
from memory_operator.resync import Retries

CR = {"metadata": {"uid": "u1", "namespace": "ns", "name": "a"}}
TEMPORARY = Result({}, error="temporary", reason="PostgresUnavailable")


def test_a_temporary_failure_is_due_after_the_backoff_with_a_growing_count() -> None:
    retries = Retries(backoff)
    retries.record(CR, 0, TEMPORARY, now=100.0)
    assert retries.retry_of("u1") == 1
    assert retries.take_due(104.9) == []
    [(uid, failed)] = retries.take_due(105.0)
    assert (uid, failed.namespace, failed.name, failed.retry) == ("u1", "ns", "a", 1)
    assert retries.take_due(1e9) == []  # taken: not due again while its pass runs
    retries.record(CR, 1, TEMPORARY, now=110.0)
    assert retries.take_due(119.9) == []
    assert [u for u, _ in retries.take_due(120.0)] == ["u1"]  # 10 s after the second failure


def test_success_permanent_and_skipped_passes_forget_the_retry() -> None:
    for outcome in (
        Result({}, ready=True, reason="Ready"),
        Result({}, error="permanent", reason="InvalidSpec"),
        None,
    ):
        retries = Retries(backoff)
        retries.record(CR, 0, TEMPORARY, now=0.0)
        retries.record(CR, 1, outcome, now=1.0)
        assert len(retries) == 0
        assert retries.retry_of("u1") == 0


def test_later_puts_a_taken_retry_back() -> None:
    retries = Retries(backoff)
    retries.record(CR, 0, TEMPORARY, now=0.0)
    retries.take_due(5.0)
    retries.later("u1", 7.0)
    assert retries.take_due(6.9) == []
    assert len(retries.take_due(7.0)) == 1
