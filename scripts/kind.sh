#!/usr/bin/env bash
# The local kind cluster the dev overlay runs on.
#   scripts/kind.sh up CLUSTER IMAGE   create CLUSTER from e2e/kind-config.yaml unless it exists,
#                                      build IMAGE from worker/ and load it onto the node
#   scripts/kind.sh down CLUSTER       delete CLUSTER
#   scripts/kind.sh logs CLUSTER DIR   export the node's logs (kubelet, containerd, pods) into DIR
#   scripts/kind.sh bin                print the path of the pinned kind binary
#   scripts/kind.sh images             print the node images this kind runs, one a line
# Needs only Docker (and curl): kind is the `kind` on PATH when that is the pinned version, else the
# pinned release binary, fetched once into .cache/kind/ and checked against its published sha256.
set -euo pipefail

readonly KIND_VERSION=v0.33.0
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly repo
readonly config="$repo/e2e/kind-config.yaml"

# shellcheck source=scripts/platform.sh
. "$repo/scripts/platform.sh"

usage() {
  sed -n '3,8s/^# //p' "${BASH_SOURCE[0]}" >&2
  exit 2
}

# The sha256 of each kind v0.33.0 release binary, as published beside it (kind-<os>-<arch>.sha256sum).
kind_sha256() {
  case "$1" in
  linux-amd64) echo aee6151561422756b764a4ae28e7f44cda5af5a9eead3cc9985112b1de8d8e0d ;;
  linux-arm64) echo 20022bee6cfcd5086cb7234d218e3454e6090022f2a8f55d1fa7fcf42c3867a2 ;;
  darwin-amd64) echo 5a99f26f57246dc9319dd294803313197a0f34d33c525b3ea8b655db5916ece0 ;;
  darwin-arm64) echo 0c8c7dbe5e23594a198b786c4bc13dacc101fa6196b0cb0b23a1ca44e61f4b4f ;;
  *) return 1 ;;
  esac
}

# The node images kind v0.33.0's release notes list as pre-built for it (only these digests are
# built for this kind), then kind v0.32.0's 1.33 image, the oldest minor the manifests promise,
# which kind supports with later releases on a best-effort basis. A node image anywhere in the
# repository must be one of these (e2e/test_pins.py).
node_images() {
  cat <<'EOF'
kindest/node:v1.37.0@sha256:a1ed56cfb0e7b93589bdf97c8cd566405a265939e3620fc4f5de89adff580ae5
kindest/node:v1.36.4@sha256:099e049362a1526b2db71494e1947aae99bd16290d7c895f2b7ea312e3cbfaed
kindest/node:v1.35.8@sha256:07b2536e30b803ed61d1677a79df6115f798ce64c80f9e22f6ed45afd09323c0
kindest/node:v1.34.11@sha256:44e222ee2132dab25ff87301682f89eb82c7880ea3a1bf543bfe9708fd08d67d
kindest/node:v1.33.12@sha256:3f5c8443c620245e4d355cfe09e96a91ead32ceaa569d3f1ca9edf0cb2fe2ff4
EOF
}

install_hint() {
  cat >&2 <<EOF
${0##*/}: install kind $KIND_VERSION and put it on PATH, for example with
  go install sigs.k8s.io/kind@$KIND_VERSION
or by downloading kind-<os>-<arch> from
  https://github.com/kubernetes-sigs/kind/releases/tag/$KIND_VERSION
and checking it against the .sha256sum file published beside it.
EOF
}

kind_bin() {
  local found
  if found=$(command -v kind) && [[ " $("$found" version 2>/dev/null) " == *" $KIND_VERSION "* ]]; then
    echo "$found"
    return
  fi
  local plat want dest
  if ! plat=$(platform); then
    install_hint
    die "kind publishes no binary for $(uname -s)/$(uname -m)"
  fi
  want=$(kind_sha256 "$plat")
  dest="$repo/.cache/kind/$KIND_VERSION/kind"
  if [[ -x $dest && $(sha256_of "$dest") == "$want" ]]; then
    echo "$dest"
    return
  fi
  echo "${0##*/}: fetching kind $KIND_VERSION ($plat)" >&2
  if ! fetch_checked "https://github.com/kubernetes-sigs/kind/releases/download/$KIND_VERSION/kind-$plat" \
    "$dest" "$want"; then
    install_hint
    die "could not download kind $KIND_VERSION"
  fi
  chmod 0755 "$dest"
  echo "$dest"
}

up() {
  local cluster=$1 image=$2 kind clusters
  command -v docker >/dev/null 2>&1 || die "docker not found on PATH: kind runs its node in Docker"
  kind=$(kind_bin)
  # Captured first: grep -q leaving a pipe early would make pipefail report a failed `kind`.
  clusters=$("$kind" get clusters 2>/dev/null)
  if grep -qx -- "$cluster" <<<"$clusters"; then
    echo "${0##*/}: cluster $cluster exists; reusing it" >&2
    "$kind" export kubeconfig --name "$cluster"
  else
    "$kind" create cluster --name "$cluster" --config "$config" --wait 120s
  fi
  "$repo/scripts/build-image.sh" "$image" "$repo/worker"
  "$kind" load docker-image "$image" --name "$cluster"
}

main() {
  local kind
  case "${1:-}" in
  up)
    [[ $# -eq 3 ]] || usage
    up "$2" "$3"
    ;;
  down)
    [[ $# -eq 2 ]] || usage
    kind=$(kind_bin)
    "$kind" delete cluster --name "$2"
    ;;
  logs)
    [[ $# -eq 3 ]] || usage
    kind=$(kind_bin)
    "$kind" export logs "$3" --name "$2"
    ;;
  bin)
    [[ $# -eq 1 ]] || usage
    kind_bin
    ;;
  images)
    [[ $# -eq 1 ]] || usage
    node_images
    ;;
  *) usage ;;
  esac
}

main "$@"
