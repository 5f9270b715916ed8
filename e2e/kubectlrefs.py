"""What a `kubectl` command line names (namespace, objects, labels), checked against an overlay's
rendered objects: `kubectl -n job-wq-2 port-forward pod/redis 6379` names a Pod no overlay has."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rendering import REPO

Manifest = dict[str, Any]

# kubectl's names for the kinds the docs use (`kubectl api-resources`): singular, plural, short.
KINDS = {
    **dict.fromkeys(("pod", "pods", "po"), "Pod"),
    **dict.fromkeys(("job", "jobs"), "Job"),
    **dict.fromkeys(("statefulset", "statefulsets", "sts"), "StatefulSet"),
    **dict.fromkeys(
        ("persistentvolumeclaim", "persistentvolumeclaims", "pvc"), "PersistentVolumeClaim"
    ),
    **dict.fromkeys(("service", "services", "svc"), "Service"),
    **dict.fromkeys(("configmap", "configmaps", "cm"), "ConfigMap"),
    **dict.fromkeys(("secret", "secrets"), "Secret"),
    **dict.fromkeys(("namespace", "namespaces", "ns"), "Namespace"),
    **dict.fromkeys(("networkpolicy", "networkpolicies", "netpol"), "NetworkPolicy"),
    **dict.fromkeys(("poddisruptionbudget", "poddisruptionbudgets", "pdb"), "PodDisruptionBudget"),
    **dict.fromkeys(("scaledjob", "scaledjobs", "sj"), "ScaledJob"),
}  # fmt: skip
# Options that take a value as the next word; `-f` does too, except in `logs -f` (follow).
_VALUED = frozenset({
    "-n", "--namespace", "-l", "--selector", "-o", "--output", "-p", "--patch", "--for",
    "--timeout", "--from-literal", "--from-file", "--cascade", "-c", "--container", "--context",
    "--dry-run", "-k", "--kustomize", "--type", "-f", "--filename",
})  # fmt: skip
# Objects users create themselves, which the rendered objects only refer to.
_CREATED = frozenset({"Secret", "ConfigMap", "Namespace"})


@dataclass(frozen=True)
class Rendered:
    """The names a cluster deployed from one overlay has."""

    objects: list[Manifest]
    text: str

    def names(self, kind: str) -> set[str]:
        names = {o["metadata"]["name"] for o in self.objects if o["kind"] == kind}
        for sts in (o for o in self.objects if o["kind"] == "StatefulSet"):
            ordinals = range(int(sts["spec"].get("replicas", 1)))
            name = sts["metadata"]["name"]
            if kind == "Pod":  # a StatefulSet's Pods are named by ordinal; a Job's are random
                names |= {f"{name}-{i}" for i in ordinals}
            if kind == "PersistentVolumeClaim":
                for template in sts["spec"].get("volumeClaimTemplates", []):
                    claim = template["metadata"]["name"]
                    names |= {f"{claim}-{name}-{i}" for i in ordinals}
        return names

    def namespaces(self) -> set[str]:
        own = {o["metadata"].get("namespace") for o in self.objects}
        return (own | self.names("Namespace")) - {None}

    def referred_to(self, name: str) -> bool:
        """Whether an object refers to `name` (a Secret the user creates, say)."""
        return re.search(rf":\s*{re.escape(name)}\s*$", self.text, re.MULTILINE) is not None

    def labels(self) -> set[tuple[str, str]]:
        found: set[tuple[str, str]] = set()
        for obj in self.objects:
            for meta in _metadata(obj):
                found |= set((meta.get("labels") or {}).items())
        return found


def _metadata(node: Any) -> Iterator[Manifest]:
    """Every `metadata` in an object: its own and its templates' (Jobs, StatefulSets, ...)."""
    if isinstance(node, dict):
        if isinstance(node.get("metadata"), dict):
            yield node["metadata"]
        for value in node.values():
            yield from _metadata(value)
    elif isinstance(node, list):
        for value in node:
            yield from _metadata(value)


def _parsed(words: list[str]) -> tuple[list[str], dict[str, str]]:
    """The positional words and the options of `kubectl WORDS...`."""
    positional: list[str] = []
    options: dict[str, str] = {}
    at = 1
    while at < len(words):
        word = words[at]
        name, equals, value = word.partition("=")
        follow = name == "-f" and positional[:1] == ["logs"]
        if word.startswith("-") and equals:
            options[name] = value
        elif word in _VALUED and not follow and at + 1 < len(words):
            options[word] = words[at + 1]
            at += 1
        elif not word.startswith("-"):
            positional.append(word)
        at += 1
    return positional, options


def _scope_problems(options: dict[str, str], rendered: Rendered) -> list[str]:
    """What the namespace, the kustomization and the label selector name that is not there."""
    found = []
    namespace = options.get("-n") or options.get("--namespace")
    if namespace and namespace not in rendered.namespaces():
        found.append(f"no namespace {namespace!r}")
    for flag in ("-k", "--kustomize"):
        if flag in options and not (REPO / options[flag]).is_dir():
            found.append(f"no directory {options[flag]}")
    selector = options.get("-l") or options.get("--selector")
    for pair in selector.split(",") if selector else []:
        key, _, value = pair.partition("=")
        if (key, value) not in rendered.labels():
            found.append(f"no object labelled {pair}")
    return found


def _references(verb: str, rest: list[str]) -> list[tuple[str, str]]:
    """(kind word, name) of each object a command names: `TYPE/NAME`, or `TYPE NAME...`."""
    if verb == "rollout":
        rest = rest[1:]  # rollout restart|status TYPE/NAME
    refs = [(kind, name) for kind, _, name in (word.partition("/") for word in rest if "/" in word)]
    plain = [word for word in rest if "/" not in word and not word.isdigit()]
    if plain and plain[0] in KINDS:
        kind_word, *names = plain
        if verb == "create" and KINDS[kind_word] == "Secret":
            names = names[1:]  # create secret generic NAME
        refs += [(kind_word, name) for name in names]
    return refs


def problems(words: list[str], rendered: Rendered) -> list[str]:
    """What `kubectl WORDS...` names that a cluster deployed from the overlay would not have."""
    positional, options = _parsed(words)
    found = _scope_problems(options, rendered)
    verb, *rest = positional or [""]
    if verb == "kustomize":
        return found + [f"no directory {path}" for path in rest if not (REPO / path).is_dir()]
    for kind_word, name in _references(verb, rest):
        kind = KINDS.get(kind_word)
        if kind is None:
            found.append(f"{kind_word}/{name}: a kind the docs' check does not know")
        elif name in rendered.names(kind):
            continue
        elif verb == "create" or kind in _CREATED:
            if not rendered.referred_to(name):
                found.append(f"no {kind} {name!r} in or named by the rendered objects")
        else:
            found.append(f"no {kind} {name!r} (there are: {sorted(rendered.names(kind))})")
    return found


def rendered_from(target: str) -> Path:
    """The directory an `overlay=` option names: an overlay's name, or a path in the repo."""
    return REPO / target if "/" in target else REPO / "overlays" / target
