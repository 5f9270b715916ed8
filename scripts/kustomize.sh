#!/usr/bin/env bash
# The pinned kustomize, the one release that renders and edits every overlay here.
#   scripts/kustomize.sh bin               print the path of the pinned kustomize binary
#   scripts/kustomize.sh build DIR         render DIR (what make render and make validate run)
#   scripts/kustomize.sh checksum OS-ARCH  print the published sha256 of that platform's archive
#   scripts/kustomize.sh ARGS...           run the pinned kustomize, e.g. edit set image ...
# The binary is the `kustomize` on PATH when that is the pinned version, else the release archive
# for this machine (Linux or macOS, amd64 or arm64), fetched once into .cache/kustomize/ and used
# only if its sha256 is the one written below. KUSTOMIZE_MIRROR replaces the download's base URL
# (a mirror of the GitHub release assets); the checksum applies all the same.
# `build` needs no download when the venv's kubectl embeds this same kustomize release (kubectl
# 1.37 embeds v5.8.1): kubectl's built-in renders what the standalone binary would.
set -euo pipefail

readonly KUSTOMIZE_VERSION=v5.8.1
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly repo
readonly cache="$repo/.cache/kustomize/$KUSTOMIZE_VERSION"
readonly mirror=${KUSTOMIZE_MIRROR:-https://github.com/kubernetes-sigs/kustomize/releases/download/kustomize%2F$KUSTOMIZE_VERSION}

# shellcheck source=scripts/platform.sh
. "$repo/scripts/platform.sh"

usage() {
  sed -n '3,6s/^# //p' "${BASH_SOURCE[0]}" >&2
  exit 2
}

# The sha256 of each kustomize v5.8.1 release archive, as in the release's checksums.txt.
kustomize_sha256() {
  case "$1" in
  linux-amd64) echo 029a7f0f4e1932c52a0476cf02a0fd855c0bb85694b82c338fc648dcb53a819d ;;
  linux-arm64) echo 0953ea3e476f66d6ddfcd911d750f5167b9365aa9491b2326398e289fef2c142 ;;
  darwin-amd64) echo ee7cf0c1e3592aa7bb66ba82b359933a95e7f2e0b36e5f53ed0a4535b017f2f8 ;;
  darwin-arm64) echo 8886f8a78474e608cc81234f729fda188a9767da23e28925802f00ece2bab288 ;;
  *) return 1 ;;
  esac
}

install_hint() {
  cat >&2 <<EOF
${0##*/}: install kustomize $KUSTOMIZE_VERSION and put it on PATH, for example with
  go install sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION
or by downloading kustomize_${KUSTOMIZE_VERSION}_<os>_<arch>.tar.gz from
  https://github.com/kubernetes-sigs/kustomize/releases/tag/kustomize%2F$KUSTOMIZE_VERSION
and checking it against the checksums.txt published beside it.
EOF
}

# The kustomize on PATH, if it is the pinned release. `kustomize version` prints v5.8.1 (older
# releases printed {Version:kustomize/v4.5.7 ...}): either way the pin appears as a word.
pinned_on_path() {
  local found
  found=$(command -v kustomize) || return 1
  [[ " $("$found" version 2>/dev/null | tr '{}/:,' '     ') " == *" $KUSTOMIZE_VERSION "* ]] || return 1
  echo "$found"
}

# The binary unpacked from the cached archive, if that archive still has the pinned sha256.
cached() {
  local plat=$1 archive="$cache/kustomize_${KUSTOMIZE_VERSION}_${1/-/_}.tar.gz"
  [[ -f $archive && $(sha256_of "$archive") == "$(kustomize_sha256 "$plat")" ]] || return 1
  if [[ ! -x $cache/kustomize ]]; then
    tar -xzf "$archive" -C "$cache" kustomize || return 1
  fi
  echo "$cache/kustomize"
}

fetch() {
  local plat=$1 name
  name="kustomize_${KUSTOMIZE_VERSION}_${plat/-/_}.tar.gz"
  echo "${0##*/}: fetching kustomize $KUSTOMIZE_VERSION ($plat)" >&2
  rm -f "$cache/kustomize"
  if ! fetch_checked "$mirror/$name" "$cache/$name" "$(kustomize_sha256 "$plat")"; then
    install_hint
    die "could not download kustomize $KUSTOMIZE_VERSION"
  fi
  cached "$plat" || die "$name holds no kustomize binary"
}

kustomize_bin() {
  local plat
  pinned_on_path && return
  if ! plat=$(platform); then
    install_hint
    die "kustomize publishes no binary for $(uname -s)/$(uname -m)"
  fi
  cached "$plat" || fetch "$plat"
}

# kubectl's built-in kustomize, if it is the pinned release: "Kustomize Version: v5.8.1".
kubectl_embeds_pin() {
  command -v kubectl >/dev/null 2>&1 || return 1
  [[ $(kubectl version --client 2>/dev/null) == *"Kustomize Version: $KUSTOMIZE_VERSION"* ]]
}

build() {
  local found plat
  if found=$(pinned_on_path) || { plat=$(platform) && found=$(cached "$plat"); }; then
    exec "$found" build "$@"
  fi
  if kubectl_embeds_pin; then
    exec kubectl kustomize "$@"
  fi
  found=$(kustomize_bin)
  exec "$found" build "$@"
}

main() {
  local found
  case "${1:-}" in
  "" | -h | --help) usage ;;
  bin)
    [[ $# -eq 1 ]] || usage
    kustomize_bin
    ;;
  checksum)
    [[ $# -eq 2 ]] || usage
    kustomize_sha256 "$2" || die "kustomize $KUSTOMIZE_VERSION publishes no archive for $2"
    ;;
  build)
    shift
    build "$@"
    ;;
  *)
    found=$(kustomize_bin)
    exec "$found" "$@"
    ;;
  esac
}

main "$@"
