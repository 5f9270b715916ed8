#!/usr/bin/env bash
# Render each overlay with the pinned kustomize (scripts/kustomize.sh) and validate every object
# strictly (unknown fields are errors) against the Kubernetes version in scripts/k8s-version, the
# oldest minor the manifests promise to run on. kubernetes-validate only warns about a kind it has no
# schema for; that counts as a failure here. Custom resources (KEDA's ScaledJob, ...) are validated
# against their CRD's JSON schema instead, from $CRD_SCHEMAS_DIR (files <group>/<kind>_<version>.json),
# else ../shared/schemas/crds beside the repository, else the public CRDs catalog at the commit in
# scripts/crds-catalog. Where none has a resource's schema (offline), that check is skipped with
# one line saying so, and the run passes; with CI=true it fails instead: CI must check every
# resource.
# Usage: scripts/validate.sh [OVERLAY...]
#   OVERLAY   a name under overlays/; none: every overlay, and each component that no overlay uses,
#             rendered on the in-cluster Redis as an overlay would include it
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
version=$(<"$here/k8s-version")

die() {
  echo "${0##*/}: $*" >&2
  exit 1
}

# The public catalog at one commit: at main, an upstream change could turn a fresh clone red.
catalog=$(<"$here/crds-catalog")
schemas=${CRD_SCHEMAS_DIR:-}
if [[ -n $schemas && ! -d $schemas ]]; then
  die "CRD_SCHEMAS_DIR=$schemas is not a directory"
fi
if [[ -z $schemas && -d $repo/../shared/schemas/crds ]]; then
  schemas=$(cd "$repo/../shared/schemas/crds" && pwd)
fi
# Why the catalog cannot be read, asked once: offline, each request would wait for its timeout.
unreachable=
if [[ -z $schemas ]]; then
  schemas=$catalog
  if ! unreachable=$(curl -fsS --max-time 10 -o /dev/null "$catalog/README.md" 2>&1); then
    unreachable="CRD_SCHEMAS_DIR unset, no ../shared/schemas/crds, $catalog unreachable (${unreachable:-no curl})"
  fi
fi

work=$(mktemp -d)
# Inside the repository: kustomize reaches the directories it renders from by relative paths only.
scratch=$(mktemp -d "$repo/.validate.XXXXXX")
trap 'rm -rf "$work" "$scratch"' EXIT

# What to render: directories, and the names they are reported under.
names=()
dirs=()
for overlay in "$@"; do
  names+=("$overlay")
  dirs+=("$repo/overlays/$overlay")
done
if [[ $# -eq 0 ]]; then
  for found in "$repo"/overlays/*/kustomization.yaml; do
    names+=("$(basename "$(dirname "$found")")")
    dirs+=("$(dirname "$found")")
  done
  for found in "$repo"/components/*/kustomization.yaml; do
    name=$(basename "$(dirname "$found")")
    grep -qs "components/$name\$" "$repo"/overlays/*/kustomization.yaml && continue
    mkdir "$scratch/$name"
    printf '%s\n' "apiVersion: kustomize.config.k8s.io/v1beta1" "kind: Kustomization" \
      "namespace: job-wq-2" "resources: [../../base, ../../seed]" \
      "components: [../../components/namespace, ../../components/redis, ../../components/$name]" \
      >"$scratch/$name/kustomization.yaml"
    names+=("components/$name")
    dirs+=("$scratch/$name")
  done
fi

# The rendered file $1 as one file per object (kustomize separates them with a bare ---).
split_objects() {
  rm -f "$work"/object-*.yaml
  awk -v dir="$work" 'BEGIN { n = 0 } /^---$/ { n++; next } { print > (dir "/object-" n ".yaml") }' "$1"
}

# True for a custom resource: an API group with a dot that is not one of Kubernetes's own.
custom() {
  local api group
  api=$(sed -n 's/^apiVersion: //p' "$1")
  group=${api%/*}
  [[ $api == */* && $group == *.* && $group != *.k8s.io ]]
}

# The schema file for the path $1 (<group>/<kind>_<version>.json) on stdout; else why there is none,
# on stderr.
schema_file() {
  if [[ -n $unreachable ]]; then
    echo "$unreachable" >&2
    return 1
  elif [[ $schemas != "$catalog" ]]; then
    [[ -f $schemas/$1 ]] && echo "$schemas/$1" && return
    echo "no $1 in $schemas" >&2
    return 1
  fi
  # Fetched here rather than by check-jsonschema, which reports a missing schema as a traceback.
  curl -fsS --max-time 30 -o "$work/schema.json" "$catalog/$1" && echo "$work/schema.json"
}

# Each custom resource among the split objects against its CRD's schema; one line each, and a
# failure if any is invalid. One whose schema is not available is skipped, saying so; in CI
# (CI=true) that is a failure too. $1: the name to report.
custom_resources_valid() {
  local object api group kind path schema valid=0
  for object in "$work"/object-*.yaml; do
    custom "$object" || continue
    api=$(sed -n 's/^apiVersion: //p' "$object")
    group=${api%/*}
    kind=$(sed -n 's/^kind: //p' "$object" | tr '[:upper:]' '[:lower:]')
    path="$group/${kind}_${api#*/}.json"
    if ! schema=$(schema_file "$path" 2>"$work/why"); then
      # CRD_SCHEMAS_MISSING: the schemas this machine's directory is known to lack (e2e/crdschemas.py).
      if [[ ${CI:-} == true && " ${CRD_SCHEMAS_MISSING:-} " != *" $path "* ]]; then
        echo "FAIL $1: $kind.$group has no CRD schema to check it against: $(<"$work/why")" >&2
        valid=1
      else
        echo "skip $1: $kind.$group not checked, no CRD schema: $(<"$work/why")"
      fi
    # Not check-jsonschema itself: the Prometheus Operator's schemas have Go regexps that Python
    # cannot load as they are (e2e/crdschemas.py reads them as Go does).
    elif python "$repo/e2e/crdschemas.py" "$schema" "$object" >"$work/report" 2>&1; then
      echo "ok   $1: $kind.$group valid against $schemas/$path"
    else
      cat "$work/report" >&2
      echo "FAIL $1: $kind.$group is not valid against its CRD's schema" >&2
      valid=1
    fi
  done
  return "$valid"
}

failed=()
for i in "${!names[@]}"; do
  name=${names[i]}
  rendered="$work/rendered.yaml"
  if ! "$here/kustomize.sh" build "${dirs[i]}" >"$rendered"; then
    echo "FAIL $name: kustomize could not render it" >&2
    failed+=("$name")
    continue
  fi
  # kubernetes-validate gets Kubernetes's own kinds only; the custom ones are checked after.
  split_objects "$rendered"
  builtin="$work/builtin.yaml"
  : >"$builtin"
  for object in "$work"/object-*.yaml; do
    custom "$object" && continue
    cat "$object" >>"$builtin"
    echo --- >>"$builtin"
  done
  if report=$(kubernetes-validate --strict --quiet -k "$version" "$builtin") && [[ -z $report ]]; then
    echo "ok   $name: $(grep -c '^kind:' "$builtin") objects valid against Kubernetes $version"
  else
    echo "${report//$builtin/$name}" >&2
    echo "FAIL $name: not valid against Kubernetes $version" >&2
    failed+=("$name")
  fi
  if ! custom_resources_valid "$name"; then
    failed+=("$name")
  fi
done

if ((${#failed[@]})); then
  echo "validation failed for: ${failed[*]}" >&2
  exit 1
fi
