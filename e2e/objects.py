"""The rendered objects as Kubernetes reads them: the Pods they make, by component, and label
selectors. Shared by the manifest checks."""

from __future__ import annotations

from dataclasses import dataclass

from rendering import Manifest

SECRET = ("redis-auth", "password")
APP = "app.kubernetes.io/name"
COMPONENT = "app.kubernetes.io/component"


@dataclass(frozen=True)
class PodSpec:
    """A Pod, or the Pod template of a Job or StatefulSet, with the component label that says what
    it runs; a StatefulSet's first Pod also with the label its controller adds."""

    owner: str
    component: str
    labels: dict[str, str]
    spec: Manifest

    @property
    def containers(self) -> list[Manifest]:
        return [*self.spec.get("initContainers", []), *self.spec["containers"]]


def pod_specs(objects: list[Manifest]) -> list[PodSpec]:
    found = []
    for obj in objects:
        owner = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] == "Pod":
            meta, spec = obj["metadata"], obj["spec"]
        elif "template" in obj.get("spec", {}) or "jobTargetRef" in obj.get("spec", {}):
            # A ScaledJob's is in the spec of the Jobs it creates.
            template = obj["spec"].get("jobTargetRef", obj["spec"])["template"]
            meta, spec = template["metadata"], template["spec"]
        else:
            continue
        labels = meta.get("labels", {})
        if obj["kind"] == "StatefulSet":
            labels = {
                **labels,
                "statefulset.kubernetes.io/pod-name": f"{obj['metadata']['name']}-0",
            }
        found.append(PodSpec(owner, labels.get(COMPONENT, ""), labels, spec))
    return found


def pod(objects: list[Manifest], component: str) -> PodSpec:
    (only,) = [p for p in pod_specs(objects) if p.component == component]
    return only


def of_kind(objects: list[Manifest], kind: str) -> list[Manifest]:
    return [obj for obj in objects if obj["kind"] == kind]


def selects(selector: Manifest, labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics (matchLabels and matchExpressions)."""
    if not all(labels.get(key) == value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values", [])
        matched = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not matched:
            return False
    return True
