"""The Kubernetes steps of a pass: the credentials Secret (before any backend
sees a password) and the runtime's objects (token Secret, ConfigMap,
NetworkPolicy, Deployment, Service; ApiReady). Every object is compared with the
live one before it is applied.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from memory_operator import manifests as m
from memory_operator.conditions import EventReason, EventType, Reason
from memory_operator.kube_types import Rendered, Secret
from memory_operator.policy import TOKEN_SECRET_LABEL, token_secret_opted_in
from memory_operator.steps import Pass, StepError, StepOutcome

if TYPE_CHECKING:
    from memory_operator.reconcile import Reconciler


def credentials(r: Reconciler, p: Pass) -> None:
    """Generated passwords live in the credentials Secret before any backend
    sees them, so a crash between steps never loses a password. Sets p.passwords."""
    names = p.names
    live = r.kube_call("get", lambda: r.kube.get("Secret", p.namespace, names.credentials_secret))
    existing = m.decode_secret_data(live)
    passwords = {k: existing.get(k) or m.new_secret() for k in m.PASSWORD_KEYS}
    desired = m.render_secret(
        p.cr,
        names,
        names.credentials_secret,
        m.credentials_data(p.spec, names, r.config, passwords),
    )
    written = write_secret(
        r,
        p,
        desired,
        live,
        EventReason.CREDENTIALS_CREATED,
        f"generated tenant credentials in Secret {names.credentials_secret}",
    )
    if written is None:  # a concurrent pass created it first: use its passwords
        live = r.kube_call(
            "get", lambda: r.kube.get("Secret", p.namespace, names.credentials_secret)
        )
        if live:
            credentials(r, p)
        else:
            p.passwords = passwords
        return
    p.new_credentials = written
    p.passwords = passwords


def runtime_objects(r: Reconciler, p: Pass) -> StepOutcome:
    """The runtime's Kubernetes objects; done once its Deployment is available."""
    spec, names = p.spec, p.names
    token_fingerprint = token_secret(r, p)
    config_data = m.runtime_config(spec, names, r.config)
    creds = m.credentials_data(spec, names, r.config, p.passwords)
    config_hash = m.content_hash([config_data, creds, token_fingerprint])
    policy = m.render_network_policy(p.cr, names, r.config)
    apply_object(r, p, m.render_configmap(p.cr, names, config_data))
    if policy is not None:
        apply_object(r, p, policy)  # before pods exist
    deployment = apply_object(r, p, m.render_deployment(p.cr, spec, names, r.config, config_hash))
    apply_object(r, p, m.render_service(p.cr, names))
    available, message = m.deployment_available(deployment, spec.api.replicas)
    if available:
        return StepOutcome.done(
            Reason.DEPLOYMENT_AVAILABLE, f"Deployment {names.objects}: {message}"
        )
    return StepOutcome.waiting(
        Reason.DEPLOYMENT_NOT_AVAILABLE, f"Deployment {names.objects}: {message}"
    )


def apply_object(r: Reconciler, p: Pass, desired: Rendered) -> Rendered | None:
    """Apply `desired` unless the live object already matches; the object as it is now
    (the API server's answer, of desired's kind)."""
    kind, name = desired["kind"], desired["metadata"]["name"]
    # A GET of desired's kind answers with an object of that kind.
    live = cast("Rendered | None", r.kube_call("get", lambda: r.kube.get(kind, p.namespace, name)))
    if not m.needs_apply(desired, live):
        return live
    applied = r.kube_call("apply", lambda: r.kube.apply(desired))
    p.wrote(f"{kind}/{name}")
    return applied


def token_secret(r: Reconciler, p: Pass) -> str:
    """Ensure the API token Secret; returns a fingerprint (not the token) for the
    pod-template hash so a rotated token rolls the pods."""
    cr, spec, names = p.cr, p.spec, p.names
    secret_name, key = m.token_ref(spec, names)
    live = r.kube_call("get", lambda: r.kube.get("Secret", p.namespace, secret_name))
    data = m.decode_secret_data(live)
    if spec.api.token_secret_ref is not None:
        if live is not None and not token_secret_opted_in(live, p.name):
            # The CR author may not be allowed to read Secrets: only a Secret that
            # names this CR gets into its pods.
            raise StepError(
                "permanent",
                Reason.TOKEN_SECRET_NOT_ALLOWED,
                f"api.tokenSecretRef: Secret {secret_name} has not opted in; label it"
                f" {TOKEN_SECRET_LABEL}={p.name} to let this"
                " MemoryNamespace use it",
            )
        if not data.get(key):
            raise StepError(
                "temporary",
                Reason.TOKEN_SECRET_NOT_FOUND,
                f"api.tokenSecretRef: Secret {secret_name} with key {key!r} not found",
            )
        return m.content_hash(data[key])
    token = data.get(key) or m.new_secret()
    desired = m.render_secret(cr, names, secret_name, {key: token})
    written = write_secret(
        r,
        p,
        desired,
        live,
        EventReason.TOKEN_CREATED,
        f"generated API token in Secret {secret_name}",
    )
    if written is None:
        return token_secret(r, p)  # lost a race; reuse theirs
    return m.content_hash(token)


def write_secret(
    r: Reconciler,
    p: Pass,
    desired: Secret,
    live: Secret | None,
    created: EventReason,
    message: str,
) -> bool | None:
    """Create `desired` (and post the Event `created`) or apply it where it differs
    from `live`. True: written; False: it was already so; None: a concurrent pass
    created it first (read it again and use its content)."""
    if live is None:
        if r.kube_call("create", lambda: r.kube.create(desired)) is None:
            return None
        r.event(p.cr, EventType.NORMAL, created, message)
    elif m.needs_apply(desired, live):
        r.kube_call("apply", lambda: r.kube.apply(desired))
    else:
        return False
    p.wrote(f"Secret/{desired['metadata']['name']}")
    return True
