"""scripts/deploy.sh's decisions, against a stand-in kubectl (e2e/kubectl_stub.py).

Without a cluster this is the only way to put deploy.sh in front of an API server's rejections; the
rejections are the texts kubectl prints for real ones (sources beside each). The cluster e2e
(e2e/test_kind.py) runs deploy.sh against a real API server: no-op, new run, Job UIDs.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from rendering import REPO, kubectl, render

DEPLOY = REPO / "scripts" / "deploy.sh"
STUB = Path(__file__).with_name("kubectl_stub.py")
OVERLAY = "overlays/dev"
EVERYTHING = [
    "Namespace/job-wq-2",
    "Secret/redis-auth",
    "Service/redis",
    "Service/redis-headless",
    "StatefulSet/redis",
    "PodDisruptionBudget/redis",
    "NetworkPolicy/redis",
    "Job/job-wq-2",
    "Job/job-wq-2-seed",
]

# kubectl's rendering of an Invalid status with one cause (`The <Kind> "<name>" is invalid: `
# then the cause), as reported from `kubectl apply` of a Job with a changed template in
# kubernetes/kubernetes#118645; the Go dump of the template is abridged here, not changed.
TEMPLATE_IMMUTABLE = (
    'The Job "job-wq-2" is invalid: spec.template: Invalid value: core.PodTemplateSpec{ObjectMeta:'
    'v1.ObjectMeta{Name:"", GenerateName:"", Namespace:"", SelfLink:"", UID:"", '
    'ResourceVersion:"", '
    "Generation:0, CreationTimestamp:time.Date(1, time.January, 1, 0, 0, 0, 0, time.UTC), "
    'DeletionTimestamp:<nil>, Labels:map[string]string{"batch.kubernetes.io/controller-uid":'
    '"a540de6f-3fd8-4c81-8977-6288b9d14f8b", "batch.kubernetes.io/job-name":"job-wq-2"}}, '
    'Spec:core.PodSpec{Volumes:[]core.Volume{core.Volume{Name:"items", VolumeSource:core.'
    'VolumeSource{ConfigMap:(*core.ConfigMapVolumeSource)(0xc032f43038)}}}, RestartPolicy:"Never"}}'
    ": field is immutable"
)
# Several causes: the header, then one "* " line each (kubectl's MultilineError). An immutable
# field beside a plain invalid value: replacing the Job would only fail at its creation.
# An Indexed Job's completions changed without parallelism following (a new slot budget).
COMPLETIONS = (
    'The Job "job-wq-2" is invalid: spec.completions: Invalid value: 200: can only be modified '
    "in tandem with spec.parallelism"
)
MIXED = (
    'The Job "job-wq-2" is invalid: \n'
    "* spec.parallelism: Invalid value: -1: must be greater than or equal to 0\n"
    '* spec.template: Invalid value: core.PodTemplateSpec{ObjectMeta:v1.ObjectMeta{Name:""}}: '
    "field is immutable"
)
# One cause, not about immutability (the Job API's message for a podFailurePolicy naming no
# container of the template).
OTHER_INVALID = (
    'The Job "job-wq-2" is invalid: spec.podFailurePolicy.rules[1].onExitCodes.containerName: '
    'Invalid value: "wroker": must be one of the container or initContainer names '
    "in the pod template"
)
# RBAC: the user may not read Jobs (kubectl apply's wording for a forbidden GET).
FORBIDDEN = (
    "Error from server (Forbidden): error when retrieving current configuration of:\n"
    'Resource: "batch/v1, Resource=jobs", GroupVersionKind: "batch/v1, Kind=Job"\n'
    'Name: "job-wq-2", Namespace: "job-wq-2"\n'
    'from server for: "object-6.yaml": jobs.batch "job-wq-2" is forbidden: User "alice" cannot '
    'get resource "jobs" in API group "batch" in the namespace "job-wq-2"'
)
# A validating webhook that did not answer in time.
WEBHOOK_TIMEOUT = (
    "Error from server (InternalError): error when applying patch:\n"
    '{"metadata":{"annotations":{}}}\nto:\n'
    'Resource: "batch/v1, Resource=jobs", GroupVersionKind: "batch/v1, Kind=Job"\n'
    'Name: "job-wq-2", Namespace: "job-wq-2"\n'
    'for: "object-6.yaml": error when patching "object-6.yaml": Internal error occurred: failed '
    'calling webhook "validate.kyverno.svc-fail": failed to call webhook: Post '
    '"https://kyverno-svc.kyverno.svc:443/validate/fail?timeout=10s": context deadline exceeded'
)
# A policy webhook denying the change in words that contain the immutable message.
WEBHOOK_DENIED = (
    'Error from server (Forbidden): error when applying patch: for: "object-6.yaml": admission '
    'webhook "jobs.policy.example.com" denied the request: spec.template: field is immutable'
)
# The API server away for a moment.
REFUSED = (
    "The connection to the server 127.0.0.1:6443 was refused - "
    "did you specify the right host or port?"
)


@dataclass(frozen=True)
class Deployed:
    code: int
    stdout: str
    stderr: str
    calls: list[list[str]]

    def verbs(self, verb: str) -> list[list[str]]:
        """Calls of `verb` that change the cluster (dry runs excluded)."""
        return [c for c in self.calls if verb in c and "--dry-run=server" not in c]


def deploy(
    tmp_path: Path,
    *,
    existing: list[str],
    rejections: dict[str, str] | None = None,
    refused_creations: dict[str, str] | None = None,
    differing: list[str] | None = None,
    diff_errors: dict[str, str] | None = None,
    context: str = "kind-job-wq-2",
    active: str = "",
    env: dict[str, str] | None = None,
    overlay: str = OVERLAY,
    namespace: str = "job-wq-2",
) -> Deployed:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    stub = bin_dir / "kubectl"
    stub.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{STUB}" "$@"\n', encoding="utf-8")
    stub.chmod(0o755)
    scenario = tmp_path / "scenario.json"
    scenario.write_text(
        json.dumps(
            {
                "context": context,
                "cluster": context,
                "server": "https://127.0.0.1:6443",
                "existing": existing,
                "rejections": rejections or {},
                "refused_creations": refused_creations or {},
                "differing": differing or [],
                "diff_errors": diff_errors or {},
                "active": active,
                "namespace": namespace,
            }
        ),
        encoding="utf-8",
    )
    environment = {
        **{k: v for k, v in os.environ.items() if k != "CONTEXT"},
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "KUBECTL_STUB": str(scenario),
        "KUBECTL_REAL": kubectl(),
        **(env or {}),
    }
    done = subprocess.run(
        [str(DEPLOY), overlay],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    calls_file = Path(f"{scenario}.calls")
    lines = calls_file.read_text(encoding="utf-8").splitlines() if calls_file.exists() else []
    return Deployed(done.returncode, done.stdout, done.stderr, [json.loads(x) for x in lines])


def test_the_first_deploy_applies_everything_and_replaces_nothing(tmp_path: Path) -> None:
    result = deploy(tmp_path, existing=[])
    assert result.code == 0, result.stderr
    assert not result.verbs("delete")
    assert not [c for c in result.calls if "--dry-run=server" in c], "nothing exists to check"
    # The new namespace first, until its ServiceAccount exists (pods need it), then everything.
    namespace, everything = result.verbs("apply")
    [wait] = result.verbs("wait")
    assert result.calls.index(namespace) < result.calls.index(wait) < result.calls.index(everything)
    assert wait[-3:] == ["-n", "job-wq-2", "serviceaccount/default"], wait


def test_an_unchanged_tree_deletes_nothing_running_or_finished(tmp_path: Path) -> None:
    result = deploy(tmp_path, existing=EVERYTHING)
    assert result.code == 0, result.stderr
    assert not result.verbs("delete"), "an unchanged Job must never be replaced"
    assert "replacing" not in result.stdout


def every_object() -> list[str]:
    """Every object of the dev overlay as "Kind/name": a cluster where all of it was deployed."""
    return [f"{o['kind']}/{o['metadata']['name']}" for o in render("dev")]


def test_an_unchanged_tree_says_unchanged_for_every_object_and_applies_nothing(
    tmp_path: Path,
) -> None:
    """kubectl apply prints `configured` for a StatefulSet or a PodDisruptionBudget whose patch
    changes nothing (server-side defaults); the server-side diff is what tells."""
    result = deploy(tmp_path, existing=every_object())
    assert result.code == 0, result.stderr
    assert not result.verbs("apply"), "nothing differs, so nothing is applied"
    said = set(result.stdout.splitlines())
    for ref in ("statefulset.apps/redis", "poddisruptionbudget.policy/redis", "job.batch/job-wq-2"):
        assert f"{ref} unchanged" in said, result.stdout
    assert "configured" not in result.stdout


def test_only_what_differs_is_applied_in_the_overlays_order(tmp_path: Path) -> None:
    differing = ["StatefulSet/redis", "Service/redis"]
    result = deploy(tmp_path, existing=every_object(), differing=differing)
    assert result.code == 0, result.stderr
    assert len(result.verbs("apply")) == 1
    assert "statefulset.apps/redis unchanged" not in result.stdout
    assert "poddisruptionbudget.policy/redis unchanged" in result.stdout
    applied = [line for line in result.stdout.splitlines() if line.endswith(" configured")]
    assert applied == ["service/redis configured", "statefulset.apps/redis configured"], applied


def test_a_diff_that_fails_stops_before_anything_changes(tmp_path: Path) -> None:
    refusal = 'Error from server (Forbidden): jobs.batch "job-wq-2" is forbidden: cannot patch'
    result = deploy(tmp_path, existing=EVERYTHING, diff_errors={"Job/job-wq-2": refusal})
    assert_stopped_unchanged(result, refusal, "a diff error deleted something")
    assert "cannot diff job.batch/job-wq-2" in result.stderr


@pytest.mark.parametrize("jobs", [["Job/job-wq-2"], ["Job/job-wq-2-seed", "Job/job-wq-2"]])
def test_an_immutable_field_change_replaces_exactly_those_jobs(
    tmp_path: Path, jobs: list[str]
) -> None:
    rejections = {job: TEMPLATE_IMMUTABLE.replace('"job-wq-2"', f'"{job[4:]}"') for job in jobs}
    result = deploy(tmp_path, existing=EVERYTHING, rejections=rejections)
    assert result.code == 0, result.stderr
    replaced = [line for line in result.stdout.splitlines() if "replacing" in line]
    assert sorted(replaced) == sorted(
        f"deploy.sh: replacing job.batch/{job[4:]}: its new spec changes immutable fields "
        "(spec.template)"
        for job in jobs
    )
    deletes = result.verbs("delete")
    assert len(deletes) == len(jobs)
    for call in deletes:
        assert {"--cascade=foreground", "--wait"} <= set(call), call
    # Deleted (and waited for) before the apply that creates them afresh.
    [apply] = result.verbs("apply")
    assert result.calls.index(apply) > max(result.calls.index(c) for c in deletes)


def test_a_new_slot_budget_replaces_the_worker_job(tmp_path: Path) -> None:
    result = deploy(tmp_path, existing=EVERYTHING, rejections={"Job/job-wq-2": COMPLETIONS})
    assert result.code == 0, result.stderr
    assert (
        "deploy.sh: replacing job.batch/job-wq-2: its new spec changes immutable fields "
        "(spec.completions)" in result.stdout
    )
    assert len(result.verbs("delete")) == 1


def assert_stopped_unchanged(result: Deployed, refusal: str, deleted: str) -> None:
    """deploy.sh stopped, said that nothing was changed and showed kubectl's `refusal`, and
    deleted (else fail with `deleted`) and applied nothing."""
    assert result.code == 1
    assert "nothing was changed" in result.stderr
    assert refusal.splitlines()[-1] in result.stderr, "kubectl's own words must be shown"
    assert not result.verbs("delete"), deleted
    assert not result.verbs("apply")


@pytest.mark.parametrize(
    "rejection",
    [MIXED, OTHER_INVALID, FORBIDDEN, WEBHOOK_TIMEOUT, WEBHOOK_DENIED, REFUSED],
    ids=["mixed", "other-invalid", "forbidden", "webhook-timeout", "webhook-denied", "refused"],
)
def test_any_other_rejection_stops_before_anything_changes(tmp_path: Path, rejection: str) -> None:
    rejections = {"Job/job-wq-2-seed": TEMPLATE_IMMUTABLE, "Job/job-wq-2": rejection}
    result = deploy(tmp_path, existing=EVERYTHING, rejections=rejections)
    assert_stopped_unchanged(
        result, rejection, "a Job was deleted on an error that is not immutability"
    )


# A validating webhook that admits the Job as it is but refuses the new one on creation (it sees
# only creations, so the update's dry run never reached it).
CREATE_DENIED = (
    'Error from server (Forbidden): error when creating "object-6.yaml": admission webhook '
    '"require-team-label.kyverno.svc" denied the request: jobs must carry the label "team"'
)


def test_a_job_whose_replacement_would_be_refused_is_not_deleted(tmp_path: Path) -> None:
    rejections = {"Job/job-wq-2": TEMPLATE_IMMUTABLE}
    result = deploy(
        tmp_path,
        existing=EVERYTHING,
        rejections=rejections,
        refused_creations={"Job/job-wq-2": CREATE_DENIED},
    )
    assert_stopped_unchanged(
        result, CREATE_DENIED, "a Job was deleted that could not be created again"
    )


# The StatefulSet API's message for a change of volumeClaimTemplates (ValidateStatefulSetUpdate).
STATEFULSET_FORBIDDEN = (
    'The StatefulSet "redis" is invalid: spec: Forbidden: updates to statefulset spec for fields '
    "other than 'replicas', 'ordinals', 'template', 'updateStrategy', "
    "'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"
)


def test_a_rejected_redis_statefulset_is_never_replaced(tmp_path: Path) -> None:
    rejections = {"StatefulSet/redis": STATEFULSET_FORBIDDEN}
    result = deploy(tmp_path, existing=EVERYTHING, rejections=rejections)
    assert result.code == 1
    assert "its claim holds the queue" in result.stderr
    assert STATEFULSET_FORBIDDEN in result.stderr, "kubectl's own words must be shown"
    assert not result.verbs("delete") and not result.verbs("apply")


# What a cluster deployed from a tree before the StatefulSet has.
BEFORE_STATEFULSET = [
    "Namespace/job-wq-2",
    "Secret/redis-auth",
    "Service/redis",
    "NetworkPolicy/redis",
    "Pod/redis",
    "Job/job-wq-2",
    "Job/job-wq-2-seed",
]


def test_the_bare_redis_pod_goes_once_the_statefulset_is_applied(tmp_path: Path) -> None:
    result = deploy(tmp_path, existing=BEFORE_STATEFULSET)
    assert result.code == 0, result.stderr
    [apply] = result.verbs("apply")
    [delete] = result.verbs("delete")
    assert delete[2:5] == ["delete", "pod", "redis"], delete
    # In the overlay's namespace, never the context's: a Pod redis there is not ours.
    assert delete[5:7] == ["-n", "job-wq-2"], delete
    assert result.calls.index(apply) < result.calls.index(delete), "deleted before its successor"
    assert "deleting the bare Redis Pod redis" in result.stdout


def test_a_run_in_flight_on_the_bare_redis_pod_stops_the_migration(tmp_path: Path) -> None:
    result = deploy(tmp_path, existing=BEFORE_STATEFULSET, active="02")
    assert result.code == 1
    assert "a run is in flight on the bare Redis Pod redis" in result.stderr
    assert not result.verbs("delete") and not result.verbs("apply")


def test_a_pod_named_redis_outside_the_overlays_namespace_is_left_alone(tmp_path: Path) -> None:
    # Say the tutorial's own bare Pod redis, in the context's namespace `default`.
    result = deploy(tmp_path, existing=[*EVERYTHING, "Pod/redis"], namespace="default", active="1")
    assert result.code == 0, result.stderr
    assert not result.verbs("delete")
    assert "bare Redis Pod" not in result.stdout + result.stderr


def test_finished_jobs_do_not_hold_up_the_migration(tmp_path: Path) -> None:
    result = deploy(tmp_path, existing=BEFORE_STATEFULSET, active="00")
    assert result.code == 0, result.stderr
    assert len(result.verbs("delete")) == 1


def test_it_says_which_context_and_cluster_it_changes(tmp_path: Path) -> None:
    result = deploy(tmp_path, existing=[])
    assert (
        "deploy.sh: deploying overlays/dev to context kind-job-wq-2 "
        "(cluster kind-job-wq-2 at https://127.0.0.1:6443)"
    ) in result.stdout
    changing = [c for c in result.calls if c[:1] != ["config"] and "kustomize" not in c]
    assert changing and all(c[:2] == ["--context", "kind-job-wq-2"] for c in changing), changing


def test_the_dev_overlay_goes_to_another_context_only_when_named(tmp_path: Path) -> None:
    refused = deploy(tmp_path / "a", existing=[], context="prod-eu")
    assert refused.code == 1
    assert "refusing to deploy the dev overlay" in refused.stderr
    assert "CONTEXT=prod-eu" in refused.stderr
    assert not refused.verbs("apply")

    named = deploy(tmp_path / "b", existing=[], context="prod-eu", env={"CONTEXT": "prod-eu"})
    assert named.code == 0, named.stderr
    assert named.verbs("apply")


def test_other_overlays_go_to_the_current_context(tmp_path: Path) -> None:
    result = deploy(tmp_path, existing=[], context="prod-eu", overlay="overlays/ghcr")
    assert result.code == 0, result.stderr
    assert result.verbs("apply")


def test_an_unknown_context_is_refused(tmp_path: Path) -> None:
    result = deploy(tmp_path, existing=[], env={"CONTEXT": "nowhere"})
    assert result.code == 1
    assert "no context nowhere in the kubeconfig" in result.stderr


def test_an_api_server_that_does_not_answer_is_named_in_one_line(tmp_path: Path) -> None:
    # The real kubectl, not the stub: a kubeconfig whose server is a port nobody listens on.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "kubeconfig"
    config.write_text(
        json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "kind-gone",
            "clusters": [{"name": "gone", "cluster": {"server": f"https://127.0.0.1:{port}"}}],
            "users": [{"name": "me", "user": {"token": "x"}}],
            "contexts": [{"name": "kind-gone", "context": {"cluster": "gone", "user": "me"}}],
        }),
        encoding="utf-8",
    )  # fmt: skip
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kubectl").symlink_to(kubectl())  # deploy.sh calls the one on PATH
    env = {k: v for k, v in os.environ.items() if k != "CONTEXT"}
    env |= {"KUBECONFIG": str(config), "PATH": f"{bin_dir}{os.pathsep}{env['PATH']}"}
    done = subprocess.run(
        [str(DEPLOY), OVERLAY], cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    assert done.returncode == 1, done
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("deploy.sh: cannot read pod/redis: "), line
    assert f"127.0.0.1:{port}" in line and "refused" in line, line
