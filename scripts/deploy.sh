#!/usr/bin/env bash
# Apply an overlay the GitOps way: Git decides what runs, and an unchanged tree changes nothing.
#   scripts/deploy.sh OVERLAY_DIR
#   CONTEXT=NAME   deploy to this kubeconfig context (default: the current one); needed to deploy
#                  the dev overlay, whose password is committed, anywhere but a kind cluster
# Jobs are immutable. A Job whose new spec the API server rejects as an immutable-field change (new
# items or run label: a new run; another setting or image), and would admit as a new Job, is
# deleted, waiting for its pods to go, and created afresh by the apply. Any other rejection stops
# the deploy before anything changed. An object the server-side diff finds unchanged is not
# applied at all ("unchanged"), so a Job whose spec is unchanged is never touched, running or
# finished, and a no-op deploy says so for every object. Redis is never replaced: its claim holds the queue (docs/deploying.md). The bare Redis
# Pod of trees before the StatefulSet is deleted once the StatefulSet is applied, and only when no
# run is in flight on it: its queue does not move to the new Redis.
set -euo pipefail

die() {
  echo "${0##*/}: $*" >&2
  exit 1
}

usage() {
  sed -n '3,5s/^# //p' "${BASH_SOURCE[0]}" >&2
  exit 2
}

[[ $# -eq 1 ]] || usage
overlay=${1%/}
[[ -d $overlay ]] || die "no overlay directory $overlay"

context=${CONTEXT:-}
if [[ -z $context ]]; then
  context=$(kubectl config current-context) || die "no current kubeconfig context; name one with CONTEXT="
fi
target=$(kubectl config view --minify --context "$context" \
  -o jsonpath='cluster {.clusters[0].name} at {.clusters[0].cluster.server}') ||
  die "no context $context in the kubeconfig"
echo "${0##*/}: deploying $overlay to context $context ($target)"
# kind names its contexts kind-<cluster>. Anywhere else the dev password would protect a real queue.
if [[ ${overlay##*/} == dev && $context != kind-* && -z ${CONTEXT:-} ]]; then
  die "refusing to deploy the dev overlay (its password is committed) to $context, not a kind" \
    "cluster's context (kind-*); to do it anyway, name the context: CONTEXT=$context"
fi

k() { kubectl --context "$context" "$@"; }

# A read that must succeed: its output, or die with what could not be read and kubectl's own first
# line of error, which names the cause (an API server that does not answer, a forbidden read).
read_or_die() {
  local what=$1 out
  shift
  out=$(k "$@" 2>"$work/kubectl.err") || die "cannot read $what: $(head -n 1 "$work/kubectl.err")"
  printf '%s' "$out"
}

# The causes of an "is invalid" rejection as kubectl prints it, one a line: `The Job "x" is
# invalid: CAUSE`, or that line ending in ": " and then one "* CAUSE" line each. Nothing for any
# other error (forbidden, a webhook, a timeout).
causes() {
  local header
  header=$(grep -m 1 -E '^The [A-Za-z]+ "[^"]*" is invalid: ' <<<"$1") || return 0
  header=${header#*is invalid: }
  if [[ -n ${header// /} ]]; then
    echo "$header"
  else
    sed -n 's/^\* //p' <<<"$1"
  fi
}

# True when the API server rejected the object only because immutable fields would change. An
# Indexed Job's completions may change only together with parallelism, and only to its value
# (Kubernetes' validateCompletions): any other new slot budget (docs/disruptions.md) is a
# replacement too.
immutable_only() {
  local found
  found=$(causes "$1")
  [[ -n $found ]] &&
    ! grep -qvE ': (field is immutable|can only be modified in tandem with spec\.parallelism)$' \
      <<<"$found"
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

k kustomize "$overlay" >"$work/all.yaml"
# One file per object (kustomize separates them with a bare ---), to ask about each on its own;
# numbered so that the glob keeps the overlay's order.
awk -v dir="$work" 'BEGIN { n = 0 } /^---$/ { n++; next } { print > (sprintf("%s/object-%03d.yaml", dir, n)) }' \
  "$work/all.yaml"

# The bare Pod `redis` of an older tree (redis-0 of the StatefulSet has an owner and another name),
# looked for where the StatefulSet goes: a Pod redis in the context's namespace may be anyone's.
legacy=
in_namespace=()
statefulset=$(grep -lx 'kind: StatefulSet' "$work"/object-*.yaml | head -n 1) || true
if [[ -n $statefulset ]]; then
  namespace=$(sed -n 's/^  namespace: //p' "$statefulset")
  [[ -z $namespace ]] || in_namespace=(-n "$namespace")
  legacy=$(read_or_die pod/redis get pod redis ${in_namespace[@]+"${in_namespace[@]}"} \
    --ignore-not-found -o 'jsonpath={.metadata.name}{.metadata.ownerReferences}') || exit 1
  if [[ $legacy == redis ]]; then
    active=$(read_or_die "the Jobs" get jobs ${in_namespace[@]+"${in_namespace[@]}"} \
      -l app.kubernetes.io/name=job-wq-2 -o 'jsonpath={range .items[*]}{.status.active}{end}') ||
      exit 1
    if [[ -n ${active//0/} ]]; then
      die "a run is in flight on the bare Redis Pod redis, whose queue the new StatefulSet does not" \
        "take over; deploy again once the Jobs have finished (docs/deploying.md, \"From the bare" \
        "Redis Pod to the StatefulSet\"; nothing was changed)"
    fi
  fi
fi

# Every existing object is checked first, so that a refusal changes nothing at all.
replace=()
namespaces=()
changed=()
for object in "$work"/object-*.yaml; do
  name=$(read_or_die "the object in $object" get -f "$object" --ignore-not-found -o name) || exit 1
  if [[ -z $name ]]; then
    grep -qx 'kind: Namespace' "$object" && namespaces+=("$object")
    changed+=("$object")
    continue
  fi
  if rejected=$(k apply --dry-run=server -f "$object" 2>&1); then
    # kubectl apply says "configured" whenever its patch is not empty, even when the server ends
    # up changing nothing (server-side defaults); the server-side diff tells: exit 0 none, 1 some.
    # kubectl's own diff program, whatever the user's KUBECTL_EXTERNAL_DIFF exits with.
    if differences=$(KUBECTL_EXTERNAL_DIFF="" k diff -f "$object" 2>&1); then
      echo "$name unchanged"
    elif [[ $? -eq 1 ]]; then
      changed+=("$object")
    else
      die "cannot diff $name against the cluster (nothing was changed):"$'\n'"$differences"
    fi
    continue
  fi
  if [[ $name == job.batch/* ]] && immutable_only "$rejected"; then
    # Admission webhooks and quotas see only the creation, which the update's dry run never
    # reached. A dry-run creation passes validation and admission and only then finds the old Job
    # in the way, so AlreadyExists means the new Job will be created once the old one is gone.
    if ! refused=$(k create --dry-run=server -f "$object" 2>&1) &&
      ! grep -q '^Error from server (AlreadyExists): ' <<<"$refused"; then
      die "the API server would not create the new $name (nothing was changed):"$'\n'"$refused"
    fi
    replace+=("$object")
    changed+=("$object")
    echo "${0##*/}: replacing $name: its new spec changes immutable fields ($(causes "$rejected" |
      sed 's/: .*//' | paste -sd, -))"
  elif [[ $name == statefulset.apps/* ]]; then
    die "the API server rejects the new spec of $name; its claim holds the queue, see" \
      "docs/deploying.md, \"Changing Redis\" (nothing was changed):"$'\n'"$rejected"
  else
    die "the API server rejects the new $name (nothing was changed):"$'\n'"$rejected"
  fi
done

# (The odd expansion: bash 3.2, macOS's, calls an empty array unset.)
for object in ${replace[@]+"${replace[@]}"}; do
  k delete -f "$object" --cascade=foreground --wait --timeout=5m --ignore-not-found
done
# A new namespace first: the API server refuses pods in it until its default ServiceAccount exists.
# (`wait --for=create` needs kubectl 1.31 or later; make deploy uses the pinned one.)
for object in ${namespaces[@]+"${namespaces[@]}"}; do
  k apply -f "$object"
  k wait --for=create --timeout=60s -n "$(sed -n 's/^  name: //p' "$object")" serviceaccount/default
done
# Only what is new or differs, in the overlay's order (kustomize's: namespaces and configuration
# before what uses them).
if [[ ${#changed[@]} -gt 0 ]]; then
  for object in "${changed[@]}"; do
    cat "$object"
    echo ---
  done >"$work/changed.yaml"
  k apply -f "$work/changed.yaml"
fi
if [[ $legacy == redis ]]; then
  echo "${0##*/}: deleting the bare Redis Pod redis: the StatefulSet's redis-0 serves the queue now"
  k delete pod redis ${in_namespace[@]+"${in_namespace[@]}"} --wait --timeout=2m --ignore-not-found
fi
