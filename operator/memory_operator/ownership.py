"""Who owns a tenant's external data, and who may take it over. Pure, no I/O.

The data a CR creates records its owner where it lives: the PostgreSQL role and
schema carry a comment naming the CR's namespace, name and uid. PostgreSQL is
the first backend a pass writes and the source of truth of a tenant, so its
record decides for the whole tenant: a pass that may not take the database
stops before Qdrant, Kafka or Redis are touched.

The rule (docs/OPERATOR.md, "Ownership and adoption"):
- data recorded to this CR: ours;
- data recorded to another CR of the same namespace (a CR deleted with
  `deletionPolicy: Retain` and created again): adopted, the record is rewritten;
- data recorded to another namespace: never, unless the operator's
  administrator lists the tenant for this namespace (`SOMAFRACTAL_ADOPT`);
- data that exists without a record (made before records existed, or by hand):
  only by the CR whose status already names it (the operator wrote that status
  for it) or by an administrator's adoption;
- deletion (`deletionPolicy: Delete`) only of data recorded to this CR's uid, or
  unrecorded data its status names.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass

from memory_operator.kube_types import MemoryNamespace

MANAGED_BY = "somafractal-operator"


class Adoption(enum.Enum):
    """What a CR may take beyond data recorded to its own namespace."""

    NONE = "none"
    UNRECORDED = "unrecorded"  # its status names the data: the operator made it for this CR
    ANY = "any"  # an administrator's adoption (operator configuration)


@dataclass(frozen=True, order=True)
class Owner:
    """A MemoryNamespace by identity: who owns data, or claims a tenant (claims.Claim)."""

    namespace: str
    name: str
    uid: str

    @classmethod
    def of(cls, cr: MemoryNamespace) -> Owner:
        md = cr["metadata"]
        return cls(md["namespace"], md["name"], md["uid"])

    def record(self) -> str:
        """The text stored with the data (a COMMENT), stable for a given CR."""
        return json.dumps(
            {"managedBy": MANAGED_BY, "namespace": self.namespace, "name": self.name,
             "uid": self.uid},
            sort_keys=True,
        )  # fmt: skip

    @classmethod
    def parse(cls, text: str | None) -> Owner | None:
        """The owner a stored record names; None for no record or someone else's text."""
        try:
            data = json.loads(text or "")
            if data.get("managedBy") != MANAGED_BY:
                return None
            return cls(str(data["namespace"]), str(data["name"]), str(data["uid"]))
        except (ValueError, KeyError, TypeError, AttributeError):
            return None

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name} (uid {self.uid})"


class NotOwner(ValueError):
    """The data belongs to another owner; nothing was written."""


def check_take(what: str, recorded: Owner | None, me: Owner, adoption: Adoption) -> None:
    """Raise NotOwner unless `me` may write (and re-record) existing data `what`."""
    if recorded is None:
        if adoption is Adoption.NONE:
            raise NotOwner(
                f"{what} exists without an owner record; an administrator can hand it"
                f" to namespace {me.namespace} with SOMAFRACTAL_ADOPT"
            )
        return
    if recorded.uid == me.uid or recorded.namespace == me.namespace:
        return
    if adoption is not Adoption.ANY:
        raise NotOwner(
            f"{what} belongs to {recorded}; only an administrator can hand it to namespace"
            f" {me.namespace} (SOMAFRACTAL_ADOPT)"
        )


def check_delete(what: str, recorded: Owner | None, me: Owner, adoption: Adoption) -> None:
    """Raise NotOwner unless `me` may delete existing data `what`."""
    if recorded is None and adoption is not Adoption.NONE:
        return
    if recorded is not None and recorded.uid == me.uid:
        return
    raise NotOwner(f"{what} is not recorded to this resource ({recorded or 'no record'})")
