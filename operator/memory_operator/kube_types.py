"""The shapes of the raw Kubernetes objects the operator reads and writes, so mypy
checks their field names. total=False where the API server may omit a field.

The spec stays a plain mapping here: spec.parse_spec validates it into
MemoryNamespaceSpec, which is what the operator works with."""

from __future__ import annotations

from typing import Any, TypedDict, TypeVar


class OwnerReference(TypedDict, total=False):
    apiVersion: str
    kind: str
    name: str
    uid: str
    controller: bool
    blockOwnerDeletion: bool


class ObjectMeta(TypedDict, total=False):
    name: str
    generateName: str
    namespace: str
    uid: str
    generation: int
    resourceVersion: str
    creationTimestamp: str
    deletionTimestamp: str
    labels: dict[str, str]
    annotations: dict[str, str]
    finalizers: list[str]
    ownerReferences: list[OwnerReference]


class KubeObject(TypedDict, total=False):
    """What every Kubernetes object has; the kinds below add their own fields."""

    apiVersion: str
    kind: str
    metadata: ObjectMeta


# An object the operator renders and applies; the API server answers with one of its kind.
Rendered = TypeVar("Rendered", bound=KubeObject)


class Condition(TypedDict, total=False):
    """A metav1.Condition (the operator always writes every field; a
    Deployment's conditions have no observedGeneration)."""

    type: str
    status: str
    reason: str
    message: str
    lastTransitionTime: str
    observedGeneration: int


class MemoryNamespaceStatus(TypedDict, total=False):
    observedGeneration: int
    conditions: list[Condition]
    tenant: str
    schema: str
    role: str
    collection: str
    topics: list[str]
    cacheUser: str
    keyPrefix: str
    endpoint: str
    tokenSecret: str
    credentialsSecret: str


class MemoryNamespace(KubeObject, total=False):
    """A MemoryNamespace custom resource as the API server returns it."""

    spec: dict[str, Any]  # validated by spec.parse_spec
    status: MemoryNamespaceStatus


class Secret(KubeObject, total=False):
    type: str
    data: dict[str, str]  # base64 values


class ConfigMap(KubeObject, total=False):
    data: dict[str, str]


class DeploymentStatus(TypedDict, total=False):
    observedGeneration: int
    replicas: int
    updatedReplicas: int
    readyReplicas: int
    availableReplicas: int
    conditions: list[Condition]


class LabelSelector(TypedDict, total=False):
    matchLabels: dict[str, str]


class LocalObjectReference(TypedDict):
    name: str


class KeySelector(TypedDict):
    """A secretKeyRef (or configMapKeyRef): one key of an object of the namespace."""

    name: str
    key: str


class EnvVarSource(TypedDict, total=False):
    secretKeyRef: KeySelector


class EnvVar(TypedDict, total=False):
    name: str
    value: str
    valueFrom: EnvVarSource


class EnvFromSource(TypedDict, total=False):
    configMapRef: LocalObjectReference


class ContainerPort(TypedDict, total=False):
    name: str
    containerPort: int
    protocol: str


class HTTPGetAction(TypedDict, total=False):
    path: str
    port: int | str  # a number or a container port's name


class Probe(TypedDict, total=False):
    httpGet: HTTPGetAction
    periodSeconds: int
    timeoutSeconds: int
    failureThreshold: int


class Capabilities(TypedDict, total=False):
    add: list[str]
    drop: list[str]


class SecurityContext(TypedDict, total=False):
    allowPrivilegeEscalation: bool
    readOnlyRootFilesystem: bool
    capabilities: Capabilities


class ResourceRequirements(TypedDict, total=False):
    requests: dict[str, int | str]  # quantities: 1, "500m", "256Mi"
    limits: dict[str, int | str]


class VolumeMount(TypedDict, total=False):
    name: str
    mountPath: str


class Container(TypedDict, total=False):
    name: str
    image: str
    imagePullPolicy: str
    args: list[str]
    ports: list[ContainerPort]
    envFrom: list[EnvFromSource]
    env: list[EnvVar]
    livenessProbe: Probe
    readinessProbe: Probe
    startupProbe: Probe
    securityContext: SecurityContext
    volumeMounts: list[VolumeMount]
    resources: ResourceRequirements


class SeccompProfile(TypedDict, total=False):
    type: str


class PodSecurityContext(TypedDict, total=False):
    runAsNonRoot: bool
    runAsUser: int
    runAsGroup: int
    seccompProfile: SeccompProfile


class EmptyDirVolumeSource(TypedDict, total=False):
    medium: str
    sizeLimit: str


class Volume(TypedDict, total=False):
    name: str
    emptyDir: EmptyDirVolumeSource


class PodSpec(TypedDict, total=False):
    automountServiceAccountToken: bool
    securityContext: PodSecurityContext
    containers: list[Container]
    volumes: list[Volume]


class PodTemplateSpec(TypedDict, total=False):
    metadata: ObjectMeta
    spec: PodSpec


class DeploymentSpec(TypedDict, total=False):
    replicas: int
    selector: LabelSelector
    template: PodTemplateSpec


class Deployment(KubeObject, total=False):
    spec: DeploymentSpec
    status: DeploymentStatus


class WatchEvent(TypedDict, total=False):
    """One line of a watch: ADDED, MODIFIED, DELETED or BOOKMARK with an object of
    the watched kind; ERROR with a metav1.Status (code, message) instead."""

    type: str
    object: dict[str, Any]  # either shape: the reader checks `type` first


class OwnedEvent(TypedDict):
    """A watch event on an object the operator owns, digested to what the
    handler needs (owned_watch.digest); type None for a listed object."""

    type: str | None
    object: Deployment


class ObjectReference(TypedDict, total=False):
    apiVersion: str
    kind: str
    name: str
    namespace: str
    uid: str


class EventSource(TypedDict, total=False):
    component: str


class Event(KubeObject, total=False):
    """A core/v1 Event (what `kubectl describe` shows under an object)."""

    involvedObject: ObjectReference
    type: str
    reason: str
    message: str
    source: EventSource
    reportingComponent: str
    reportingInstance: str
    firstTimestamp: str
    lastTimestamp: str
    count: int


class ServicePort(TypedDict, total=False):
    name: str
    port: int
    targetPort: int | str  # a number or a container port's name
    protocol: str


class ServiceSpec(TypedDict, total=False):
    type: str
    selector: dict[str, str]
    ports: list[ServicePort]


class Service(KubeObject, total=False):
    spec: ServiceSpec


class NetworkPolicyPeer(TypedDict, total=False):
    podSelector: LabelSelector
    namespaceSelector: LabelSelector  # {} selects every namespace


class NetworkPolicyPort(TypedDict, total=False):
    protocol: str
    port: int | str


# "from" is a Python keyword: the functional form.
NetworkPolicyIngressRule = TypedDict(
    "NetworkPolicyIngressRule",
    {"from": list[NetworkPolicyPeer], "ports": list[NetworkPolicyPort]},
    total=False,
)


class NetworkPolicySpec(TypedDict, total=False):
    podSelector: LabelSelector
    policyTypes: list[str]
    ingress: list[NetworkPolicyIngressRule]


class NetworkPolicy(KubeObject, total=False):
    spec: NetworkPolicySpec


class PeerRecord(TypedDict, total=False):
    """One operator process in a Kopf peering object's status (peering.py reads it)."""

    priority: int
    lifetime: int
    lastseen: str


class KopfPeering(KubeObject, total=False):
    """A ClusterKopfPeering or KopfPeering: Kopf keeps its peers' records in the
    status, by process identity; the operator creates the object and reads them."""

    status: dict[str, PeerRecord]
