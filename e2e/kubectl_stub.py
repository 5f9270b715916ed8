"""A stand-in `kubectl` for testing scripts/deploy.sh's decisions without a cluster.

No API server runs on a machine without a cluster, so this answers as one would: which objects
exist, and what a server-side dry-run apply says about each, with the error texts kubectl prints
for real rejections (e2e/test_deploy.py quotes their sources). Every call is recorded. `kustomize`
is passed to the real kubectl. The cluster e2e (e2e/test_kind.py) runs deploy.sh for real.

Reads the scenario from the JSON file named by $KUBECTL_STUB (keys: context, cluster, server,
existing: ["Kind/name"], rejections: {"Kind/name": "text"}, and optionally refused_creations:
{"Kind/name": "text"}, differing: ["Kind/name"] (what `kubectl diff` finds changed; every other
existing object it finds unchanged), diff_errors: {"Kind/name": "text"} and active: the Jobs'
active pod counts run together, as the jsonpath `{range .items[*]}{.status.active}{end}` prints
them), appends each call's argv to
$KUBECTL_STUB.calls as a JSON line. The objects live in the namespace `namespace` (job-wq-2 by
default); a read by name without `-n` looks in the context's namespace, `default`, as kubectl does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml


def _object(path: str) -> str:
    [obj] = [doc for doc in yaml.safe_load_all(Path(path).read_text(encoding="utf-8")) if doc]
    return f"{obj['kind']}/{obj['metadata']['name']}"


def _resource(ref: str) -> str:
    """`kubectl get -o name`'s spelling: job.batch/job-wq-2, pod/redis."""
    kind, name = ref.split("/", 1)
    group = {
        "Job": ".batch",
        "NetworkPolicy": ".networking.k8s.io",
        "StatefulSet": ".apps",
        "PodDisruptionBudget": ".policy",
    }.get(kind, "")
    return f"{kind.lower()}{group}/{name}"


def _config(scenario: dict[str, Any], args: list[str]) -> int:
    if args[:1] == ["current-context"]:
        print(scenario["context"])
        return 0
    if args[:1] == ["view"] and "--minify" in args:
        context = args[args.index("--context") + 1]
        if context != scenario["context"]:
            print(f"error: context was not found for specified context: {context}", file=sys.stderr)
            return 1
        print(f"cluster {scenario['cluster']} at {scenario['server']}", end="")
        return 0
    raise SystemExit(f"kubectl stub: unexpected config call {args}")


def main(argv: list[str]) -> int:
    state = Path(os.environ["KUBECTL_STUB"])
    scenario = json.loads(state.read_text(encoding="utf-8"))
    with open(f"{state}.calls", "a", encoding="utf-8") as calls:
        calls.write(json.dumps(argv) + "\n")
    args = list(argv)
    if args[:1] == ["--context"]:
        if args[1] != scenario["context"]:
            raise SystemExit(f"kubectl stub: called for context {args[1]}")
        args = args[2:]
    if args[:1] == ["kustomize"]:
        return subprocess.run([os.environ["KUBECTL_REAL"], *args], check=False).returncode
    if args[:1] == ["config"]:
        return _config(scenario, args[1:])
    return _object_call(scenario, args)


def _get(scenario: dict[str, Any], target: str) -> int:
    ref = _object(target)
    if ref in scenario["existing"]:
        print(_resource(ref))
    return 0


def _namespace(args: list[str]) -> str:
    """The namespace a call names, or the context's (`default`) when it names none."""
    for flag in ("-n", "--namespace"):
        if flag in args:
            return args[args.index(flag) + 1]
    return "default"


def _jsonpath(scenario: dict[str, Any], args: list[str]) -> int:
    """deploy.sh's two reads by name: the bare Redis Pod, the Jobs' active pods."""
    ours = _namespace(args) == scenario.get("namespace", "job-wq-2")
    if args[1:3] == ["pod", "redis"]:
        # Listed in `existing`, it is a bare Pod: a name and no owner references.
        print("redis" if ours and "Pod/redis" in scenario["existing"] else "", end="")
    elif args[1] == "jobs":
        print(scenario.get("active", "") if ours else "", end="")
    else:
        raise SystemExit(f"kubectl stub: unexpected get {args}")
    return 0


def _dry_run_apply(scenario: dict[str, Any], target: str) -> int:
    rejection = scenario["rejections"].get(_object(target))
    if rejection is not None:
        print(rejection, file=sys.stderr)
        return 1
    print(f"{_resource(_object(target))} unchanged (server dry run)")
    return 0


def _dry_run_create(scenario: dict[str, Any], target: str) -> int:
    ref = _object(target)
    refused = scenario.get("refused_creations", {}).get(ref)
    if refused is None and ref in scenario["existing"]:
        # Validation and admission passed; only the old object is in the way.
        kind, name = ref.split("/", 1)
        plural = _resource(ref).split("/")[0].replace(kind.lower(), kind.lower() + "s", 1)
        refused = (
            f'Error from server (AlreadyExists): error when creating "{target}": '
            f'{plural} "{name}" already exists'
        )
    if refused is not None:
        print(refused, file=sys.stderr)
        return 1
    print(f"{_resource(ref)} created (server dry run)")
    return 0


def _diff(scenario: dict[str, Any], target: str) -> int:
    """kubectl diff's exit codes: 0 no differences, 1 some, anything else an error."""
    ref = _object(target)
    error = scenario.get("diff_errors", {}).get(ref)
    if error is not None:
        print(error, file=sys.stderr)
        return 2
    if ref in scenario.get("differing", []):
        print(f"diff -u -N /tmp/LIVE/{ref} /tmp/MERGED/{ref}\n-  replicas: 1\n+  replicas: 2")
        return 1
    return 0


def _apply(target: str) -> int:
    """As kubectl says it: one line per object of the file, in the file's order."""
    for doc in yaml.safe_load_all(Path(target).read_text(encoding="utf-8")):
        if doc:
            print(f"{_resource(doc['kind'] + '/' + doc['metadata']['name'])} configured")
    return 0


def _object_call(scenario: dict[str, Any], args: list[str]) -> int:
    """get, apply and create (dry run or not), diff, delete and wait, as an API server with
    `scenario` answers."""
    target = args[args.index("-f") + 1] if "-f" in args else ""
    verb, dry_run = args[0], "--dry-run=server" in args
    if verb == "get":
        return _get(scenario, target) if target else _jsonpath(scenario, args)
    if verb in ("apply", "create") and dry_run:
        return (_dry_run_apply if verb == "apply" else _dry_run_create)(scenario, target)
    if verb == "diff":
        return _diff(scenario, target)
    if verb == "apply":
        return _apply(target)
    if verb in ("delete", "wait"):
        print(f"{verb} {target}: done")
        return 0
    raise SystemExit(f"kubectl stub: unexpected call {args}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
