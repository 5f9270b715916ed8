#!/usr/bin/env bash
# Render each overlay with the pinned kustomize (scripts/kustomize.sh) and validate every object strictly (unknown fields are errors)
# against the Kubernetes version in scripts/k8s-version, the oldest minor the manifests promise to run
# on. kubernetes-validate only warns about a kind it has no schema for; that counts as a failure here.
# Usage: scripts/validate.sh OVERLAY...   (names under overlays/, e.g. dev ghcr dockerhub gcr)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
version=$(<"$here/k8s-version")

if [[ $# -eq 0 ]]; then
  echo "usage: $0 OVERLAY..." >&2
  exit 2
fi

rendered=$(mktemp)
trap 'rm -f "$rendered"' EXIT

failed=()
for overlay in "$@"; do
  if ! "$here/kustomize.sh" build "$repo/overlays/$overlay" >"$rendered"; then
    echo "FAIL $overlay: kustomize could not render it" >&2
    failed+=("$overlay")
    continue
  fi
  if report=$(kubernetes-validate --strict --quiet -k "$version" "$rendered") && [[ -z $report ]]; then
    echo "ok   $overlay: $(grep -c '^kind:' "$rendered") objects valid against Kubernetes $version"
  else
    echo "${report//$rendered/$overlay}" >&2
    echo "FAIL $overlay: not valid against Kubernetes $version" >&2
    failed+=("$overlay")
  fi
done

if ((${#failed[@]})); then
  echo "validation failed for: ${failed[*]}" >&2
  exit 1
fi
