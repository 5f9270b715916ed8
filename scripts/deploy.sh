#!/usr/bin/env bash
# Apply an overlay so that running it again always converges. Jobs are immutable and run once, so
# before the apply every Job of the overlay that has finished, or whose new spec the API server would
# reject, is deleted (waiting for its pods to go) and is then created afresh by the apply.
# The Redis Pod is never replaced here: it holds the queue (docs/deploying.md).
# Usage: scripts/deploy.sh OVERLAY_DIR
set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 OVERLAY_DIR" >&2
  exit 2
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

kubectl kustomize "$1" >"$work/all.yaml"
# One file per object (kustomize separates them with a bare ---), to ask about each Job on its own.
awk -v dir="$work" 'BEGIN { n = 0 } /^---$/ { n++; next } { print > (dir "/object-" n ".yaml") }' "$work/all.yaml"

for object in "$work"/object-*.yaml; do
  grep -qx 'kind: Job' "$object" || continue
  # Empty when the Job does not exist; otherwise its name and the types of its true conditions.
  state=$(kubectl get -f "$object" --ignore-not-found \
    -o jsonpath='{.metadata.name}:{.status.conditions[?(@.status=="True")].type}')
  [[ -n $state ]] || continue
  if [[ $state =~ (Complete|Failed) ]]; then
    reason="it has finished"
  elif ! kubectl apply --dry-run=server -f "$object" >/dev/null 2>&1; then
    reason="its new spec cannot be applied to it"
  else
    continue
  fi
  echo "replacing job ${state%%:*}: $reason"
  kubectl delete -f "$object" --cascade=foreground --wait --timeout=5m
done

if ! kubectl apply -f "$work/all.yaml"; then
  echo "apply failed; if the Redis Pod's spec changed, see docs/deploying.md (replacing it empties the queue)" >&2
  exit 1
fi
