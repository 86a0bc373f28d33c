"""Kafka adapter (confluent-kafka AdminClient): a tenant's topics, SCRAM user and ACLs.

Observe (describe_topics, describe_configs, describe_user_scram_credentials,
describe_acls), plan purely (topics.plan_topics, acl.diff_acls), then write only the
difference. Permanent refusals (partition shrink, replication-factor change)
are found before any write, so a refused target changes nothing.

SCRAM password idempotence: Kafka never reveals a stored credential, so
- when the admin client itself speaks SASL/SCRAM, the adapter checks the tenant
  password by logging in as the tenant (read-only) and rewrites it only when the
  broker refuses it — password rotation works. A login costs a new client and a
  SASL handshake, so a password this adapter set or verified is not checked again
  for `login_check_seconds` (default 1 h; a changed password is checked at once):
  a resync of a large fleet stays cheap, a credential changed behind the
  operator's back is repaired within that time. A credential first seen by this
  process (after a restart or a failover) gets its first check at a random
  point of that interval, not at once: a restarted operator would otherwise log
  in as every tenant in its first pass (most of a resync's time: bench/README.md,
  operator at 1,000 tenants). A target with `verify_password` (the caller just generated the
  password) is checked at once;
- otherwise (e.g. a PLAINTEXT admin listener) the credential is created when
  absent and left alone after that: the operator persists tenant passwords in
  the tenant's Secret, so they don't change behind Kafka's back. Rotating one
  then means delete_topics (or deleting the credential) and ensuring again.

Why ~510 lines: three kinds of Kafka state (topics with their configs, a SCRAM
credential, ACLs), each observed, diffed and written, plus the bulk reads a
resync of the fleet shares and the error translation of one client library.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)

from memory_operator.acl import KafkaAcl, diff_acls, kafka_acls
from memory_operator.adapters.calls import backend_call
from memory_operator.domain import Outcome, PlanError, TopicsTarget
from memory_operator.ports import BackendError, BackendRejected, BackendUnavailable
from memory_operator.snapshot import WINDOW_SECONDS, Shared
from memory_operator.topics import TopicsPlan, TopicState, plan_topics, validate_target

BACKEND = "kafka"
RETENTION = "retention.ms"
SCRAM_ITERATIONS = 8192

# Errors that say "try again later" rather than "this will never work".
_TEMPORARY = {
    KafkaError._TRANSPORT,
    KafkaError._TIMED_OUT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._RESOLVE,
    KafkaError._WAIT_COORD,
    KafkaError.NETWORK_EXCEPTION,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError.NOT_CONTROLLER,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.BROKER_NOT_AVAILABLE,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.NOT_ENOUGH_REPLICAS,
    KafkaError.THROTTLING_QUOTA_EXCEEDED,
}


def _acl_fields(acl: KafkaAcl) -> tuple[Any, ...]:
    """The positional fields AclBinding and AclBindingFilter share, in their order."""
    return (
        ResourceType[acl.resource_type],
        acl.resource_name,
        ResourcePatternType[acl.pattern_type],
        acl.principal,
        acl.host,
        AclOperation[acl.operation],
        AclPermissionType[acl.permission],
    )


def _to_binding(acl: KafkaAcl) -> AclBinding:
    return AclBinding(*_acl_fields(acl))


def _to_filter(acl: KafkaAcl) -> AclBindingFilter:
    # Every field exact: the filter matches this one binding and nothing else.
    return AclBindingFilter(*_acl_fields(acl))


def _from_binding(binding: AclBinding) -> KafkaAcl:
    return KafkaAcl(
        binding.restype.name,
        binding.name,
        binding.resource_pattern_type.name,
        binding.operation.name,
        binding.principal,
        binding.host,
        binding.permission_type.name,
    )


def group_prefix(principal: str) -> str:
    # The "." can't occur in a tenant name, so tenant "acme" never matches the
    # groups of tenant "acme-corp" (a bare "mem-acme" prefix would).
    return f"{principal}."


def _translate(exc: Exception) -> BackendError | None:
    if not isinstance(exc, KafkaException):
        return None
    error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
    if error is None or error.code() in _TEMPORARY or error.retriable():
        return BackendUnavailable(BACKEND, str(error or exc))
    return BackendRejected(BACKEND, error.str())


class KafkaAdmin:
    """EventsAdmin over confluent-kafka AdminClient settings (may include SASL)."""

    def __init__(
        self,
        config: Mapping[str, Any],
        *,
        timeout: float = 10.0,
        client_class: type[AdminClient] = AdminClient,
        login_check_seconds: float = 3600.0,
        read_window: float = WINDOW_SECONDS,
    ) -> None:
        self._config = dict(config)
        self._timeout = timeout
        self._login_check_seconds = login_check_seconds
        # principal -> (fingerprint of the password known good, when it was last known good)
        self._known_good: dict[str, tuple[str, float]] = {}
        conf = {"socket.connection.setup.timeout.ms": int(timeout * 1000), **self._config}
        # client_class lets tests record every admin call (a recording subclass).
        self._admin = client_class(conf)
        mechanism = str(self._config.get("sasl.mechanism", "")).upper()
        self._mechanism = (
            ScramMechanism.SCRAM_SHA_256
            if mechanism == "SCRAM-SHA-256"
            else ScramMechanism.SCRAM_SHA_512
        )
        protocol = str(self._config.get("security.protocol", "PLAINTEXT")).upper()
        self._can_login = protocol.startswith("SASL") and mechanism.startswith("SCRAM")
        # A resync's shared reads: every topic; every ACL and SCRAM user.
        self._topics: Shared[dict[str, TopicState]] = Shared(self._read_topics, read_window)
        self._principals: Shared[tuple[dict[str, list[KafkaAcl]], frozenset[str]]] = Shared(
            self._read_principals, read_window
        )

    # -- plumbing -----------------------------------------------------------------
    def _call(self, operation: str) -> AbstractContextManager[None]:
        return backend_call(BACKEND, operation, _translate)

    @staticmethod
    def _results(futures: Mapping[Any, Any], *, ignore: tuple[int, ...] = ()) -> dict[Any, Any]:
        """Wait for every future; errors with a code in `ignore` become None."""
        out: dict[Any, Any] = {}
        for key, future in futures.items():
            try:
                out[key] = future.result()
            except KafkaException as exc:
                if exc.args and exc.args[0].code() in ignore:
                    out[key] = None
                else:
                    raise
        return out

    # -- observe -------------------------------------------------------------------
    def _describe_topics(self, names: tuple[str, ...]) -> dict[str, TopicState | None]:
        described = self._results(
            self._admin.describe_topics(
                TopicCollection(list(names)), request_timeout=self._timeout
            ),
            ignore=(KafkaError.UNKNOWN_TOPIC_OR_PART,),
        )
        existing = [n for n in names if described.get(n) is not None]
        retention: dict[str, str | None] = {}
        if existing:
            configs = self._results(
                self._admin.describe_configs(
                    [ConfigResource(ResourceType.TOPIC, n) for n in existing],
                    request_timeout=self._timeout,
                )
            )
            for resource, entries in configs.items():
                entry = entries.get(RETENTION)
                retention[resource.name] = entry.value if entry is not None else None
        out: dict[str, TopicState | None] = {}
        for name in names:
            desc = described.get(name)
            if desc is None:
                out[name] = None
                continue
            out[name] = TopicState(
                partitions=len(desc.partitions),
                replication_factor=len(desc.partitions[0].replicas) if desc.partitions else 0,
                retention_ms=retention.get(name),
            )
        return out

    def _read_topics(self) -> dict[str, TopicState]:
        """Every topic with its partitions and retention: one metadata request and
        one DescribeConfigs for all of them."""
        with self._call("read_all"):
            return self._topic_states()

    def _topic_states(self) -> dict[str, TopicState]:
        metadata = self._admin.list_topics(timeout=self._timeout)
        topics = {
            name: topic
            for name, topic in metadata.topics.items()
            if topic.error is None and not name.startswith("__")
        }
        retention: dict[str, str | None] = {}
        if topics:
            configs = self._results(
                self._admin.describe_configs(
                    [ConfigResource(ResourceType.TOPIC, n) for n in topics],
                    request_timeout=self._timeout,
                ),
                ignore=(KafkaError.UNKNOWN_TOPIC_OR_PART,),
            )
            for resource, entries in configs.items():
                entry = (entries or {}).get(RETENTION)
                retention[resource.name] = entry.value if entry is not None else None
        return {
            name: TopicState(
                partitions=len(topic.partitions),
                replication_factor=len(next(iter(topic.partitions.values())).replicas)
                if topic.partitions
                else 0,
                retention_ms=retention.get(name),
            )
            for name, topic in topics.items()
            if name in retention
        }

    def _read_principals(self) -> tuple[dict[str, list[KafkaAcl]], frozenset[str]]:
        """Every ACL by principal and every user with a credential of our mechanism."""
        with self._call("read_all"):
            return self._principal_states()

    def _principal_states(self) -> tuple[dict[str, list[KafkaAcl]], frozenset[str]]:
        everything = AclBindingFilter(
            ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
            AclOperation.ANY, AclPermissionType.ANY,
        )  # fmt: skip
        acls: dict[str, list[KafkaAcl]] = {}
        for binding in self._admin.describe_acls(
            everything, request_timeout=self._timeout
        ).result():
            acl = _from_binding(binding)
            acls.setdefault(acl.principal, []).append(acl)
        users = self._admin.describe_user_scram_credentials(request_timeout=self._timeout).result()
        scram = frozenset(
            user
            for user, description in users.items()
            if any(i.mechanism == self._mechanism for i in description.scram_credential_infos)
        )
        return acls, scram

    def topics_unchanged(self, target: TopicsTarget, not_before: float) -> bool:
        """True when the shared reads (all topics, all ACLs and SCRAM users, loaded no
        earlier than `not_before`) show nothing to do for `target` and no login check
        of its password is due; False is no verdict: ensure_topics decides."""
        topics = self._topics.get(not_before)
        try:
            if not plan_topics({n: topics.get(n) for n in target.names}, target).empty:
                return False
            if target.principal is None or target.password is None:
                return True
            want = kafka_acls(target.principal, target.names, group_prefix(target.principal))
        except PlanError:
            return False  # ensure_topics reports it
        acls, scram = self._principals.get(not_before)
        create, delete = diff_acls(acls.get(f"User:{target.principal}", []), want)
        if create or delete or target.principal not in scram:
            return False
        return not self._can_login or self._recently_good(target)

    def _scram_exists(self, principal: str) -> bool:
        result = self._results(
            self._admin.describe_user_scram_credentials([principal], request_timeout=self._timeout),
            ignore=(KafkaError.RESOURCE_NOT_FOUND,),
        ).get(principal)
        if result is None:
            return False
        return any(i.mechanism == self._mechanism for i in result.scram_credential_infos)

    def _password_accepted(self, principal: str, password: str) -> bool:
        """Log in as the tenant (read-only). False only when the broker refuses it."""
        errors: list[KafkaError] = []
        conf = {
            **self._config,
            "sasl.mechanism": self._mechanism.name.replace("_", "-"),
            "sasl.username": principal,
            "sasl.password": password,
            "error_cb": errors.append,
        }
        client = AdminClient(conf)
        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline:
            try:
                client.list_topics(timeout=0.5)
                return True
            except KafkaException:
                client.poll(0)  # deliver error_cb
                if any(e.code() == KafkaError._AUTHENTICATION for e in errors):
                    return False
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "tenant login check timed out"))

    @staticmethod
    def _fingerprint(password: str) -> str:
        return hashlib.sha256(password.encode()).hexdigest()

    def _recently_good(self, target: TopicsTarget) -> bool:
        principal, fingerprint = target.principal or "", self._fingerprint(target.password or "")
        known = self._known_good.get(principal)
        if known is None and not target.verify_password:
            # First sight in this process: due at a random point of the interval.
            age = random.uniform(0, self._login_check_seconds)
            known = self._known_good[principal] = (fingerprint, time.monotonic() - age)
        return (
            known is not None
            and known[0] == fingerprint
            and time.monotonic() - known[1] < self._login_check_seconds
        )

    def _remember_good(self, target: TopicsTarget) -> None:
        if target.principal and target.password:
            self._known_good[target.principal] = (
                self._fingerprint(target.password),
                time.monotonic(),
            )

    def _principal_acls(self, principal: str) -> list[KafkaAcl]:
        acl_filter = AclBindingFilter(
            ResourceType.ANY,
            None,
            ResourcePatternType.ANY,
            f"User:{principal}",
            None,
            AclOperation.ANY,
            AclPermissionType.ANY,
        )
        found = self._admin.describe_acls(acl_filter, request_timeout=self._timeout).result()
        return [_from_binding(b) for b in found]

    def _diff(
        self, target: TopicsTarget, *, check_login: bool
    ) -> tuple[TopicsPlan, bool, list[KafkaAcl], list[KafkaAcl]]:
        """(topic plan, whether to (re)write the SCRAM credential, ACLs to add, ACLs to drop)."""
        plan = plan_topics(self._describe_topics(target.names), target)
        set_password = False
        acls_create: list[KafkaAcl] = []
        acls_delete: list[KafkaAcl] = []
        if target.principal is not None and target.password is not None:
            want = kafka_acls(target.principal, target.names, group_prefix(target.principal))
            acls_create, acls_delete = diff_acls(self._principal_acls(target.principal), want)
            if not self._scram_exists(target.principal):
                set_password = True
            elif check_login and self._can_login and not self._recently_good(target):
                set_password = not self._password_accepted(target.principal, target.password)
                if not set_password:
                    self._remember_good(target)
        return plan, set_password, acls_create, acls_delete

    def _settle(self, target: TopicsTarget) -> None:
        """Brokers serve metadata the controller applied asynchronously: wait (bounded)
        until our writes are visible, so the next reconcile observes them and writes
        nothing. Not settling in time is not an error; the next pass re-checks."""
        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline:
            plan, set_password, acls_create, acls_delete = self._diff(target, check_login=False)
            if plan.empty and not set_password and not acls_create and not acls_delete:
                return
            time.sleep(0.1)

    # -- EventsAdmin -------------------------------------------------------------------
    def ensure_topics(self, target: TopicsTarget) -> Outcome:
        with self._call("observe"):
            validate_target(target)
            plan, set_password, acls_create, acls_delete = self._diff(target, check_login=True)
        if plan.empty and not set_password and not acls_create and not acls_delete:
            return Outcome.UNCHANGED

        with self._call("apply"):
            if plan.create:
                new = [
                    NewTopic(
                        name,
                        num_partitions=target.partitions,
                        replication_factor=target.replication_factor,
                        config={RETENTION: str(target.retention_ms)},
                    )
                    for name in plan.create
                ]
                self._results(
                    self._admin.create_topics(new, request_timeout=self._timeout),
                    ignore=(KafkaError.TOPIC_ALREADY_EXISTS,),  # a concurrent create won
                )
            if plan.grow:
                self._results(
                    self._admin.create_partitions(
                        [NewPartitions(t, n) for t, n in plan.grow.items()],
                        request_timeout=self._timeout,
                    )
                )
            if plan.retention:
                resources = [
                    ConfigResource(
                        ResourceType.TOPIC,
                        name,
                        incremental_configs=[
                            ConfigEntry(
                                RETENTION,
                                str(target.retention_ms),
                                incremental_operation=AlterConfigOpType.SET,
                            )
                        ],
                    )
                    for name in plan.retention
                ]
                self._results(
                    self._admin.incremental_alter_configs(resources, request_timeout=self._timeout)
                )
            if set_password and target.principal and target.password:
                upsert = UserScramCredentialUpsertion(
                    target.principal,
                    ScramCredentialInfo(self._mechanism, SCRAM_ITERATIONS),
                    target.password.encode(),
                )
                self._results(
                    self._admin.alter_user_scram_credentials(
                        [upsert], request_timeout=self._timeout
                    )
                )
                self._remember_good(target)
            if acls_create:
                self._results(
                    self._admin.create_acls(
                        [_to_binding(a) for a in acls_create], request_timeout=self._timeout
                    )
                )
            if acls_delete:
                self._results(
                    self._admin.delete_acls(
                        [_to_filter(a) for a in acls_delete], request_timeout=self._timeout
                    )
                )
            self._settle(target)
        if len(plan.create) == len(target.names):
            return Outcome.CREATED
        return Outcome.UPDATED

    def delete_topics(self, target: TopicsTarget) -> Outcome:
        with self._call("observe"):
            validate_target(target)
            observed = self._describe_topics(target.names)
            existing = [n for n, s in observed.items() if s is not None]
            acls: list[KafkaAcl] = []
            scram = False
            if target.principal is not None:
                acls = self._principal_acls(target.principal)
                scram = self._scram_exists(target.principal)
        if not existing and not acls and not scram:
            return Outcome.UNCHANGED
        with self._call("delete"):
            if existing:
                self._results(
                    self._admin.delete_topics(existing, request_timeout=self._timeout),
                    ignore=(KafkaError.UNKNOWN_TOPIC_OR_PART,),
                )
            if acls:
                self._results(
                    self._admin.delete_acls(
                        [_to_filter(a) for a in acls], request_timeout=self._timeout
                    )
                )
            if target.principal:
                self._known_good.pop(target.principal, None)
            if scram and target.principal:
                deletion = UserScramCredentialDeletion(target.principal, self._mechanism)
                self._results(
                    self._admin.alter_user_scram_credentials(
                        [deletion], request_timeout=self._timeout
                    ),
                    ignore=(KafkaError.RESOURCE_NOT_FOUND,),
                )
        return Outcome.DELETED
