#!/usr/bin/env bash
# Test-only: build Debian stand-ins for the upstream base images on machines that cannot pull them.
# Users never run this; worker/Dockerfile and the manifests keep pointing at the pinned upstream images.
#
#   build-bases.sh [--podman] python|redis...   prints one image reference per name on stdout
#
# python: a Debian bookworm minbase with python3 (3.11) and its venv module, for the Dockerfile's
#         PYTHON_IMAGE build argument.
# redis:  a Debian bookworm minbase with redis-server, started like the official image.
# --podman also imports the image into podman's storage, for machines that build with podman.
#
# Exit 77 means "cannot build here" (not root, no debootstrap), so callers can skip rather than fail.
# Cached twice: an image whose label matches the hash of this script's inputs is reused as is,
# and the debootstrap root filesystem is kept as a tarball under the cache directory.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache="${JOB_WQ_2_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/job-wq-2-e2e}"
suite=bookworm
label=io.github.job-wq-2.e2e-inputs

log() { echo "build-bases: $*" >&2; }

podman=false
if [[ ${1:-} == --podman ]]; then
  podman=true
  shift
fi
if [[ $# -eq 0 ]]; then
  echo "usage: $0 [--podman] python|redis..." >&2
  exit 2
fi

# The machine's own Debian mirror: the only one its network settings are known to reach.
mirror() {
  local sources=/etc/apt/sources.list.d/debian.sources uri
  if [[ -r $sources ]]; then
    uri=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' "$sources")
    if [[ -n $uri ]]; then
      echo "$uri"
      return
    fi
  fi
  echo http://deb.debian.org/debian
}

image_ref() {
  case $1 in
  python) echo localhost/job-wq-2-e2e/python:3.11-bookworm ;;
  redis) echo localhost/job-wq-2-e2e/redis:bookworm ;;
  *)
    echo "unknown base image: $1" >&2
    exit 2
    ;;
  esac
}

packages() {
  case $1 in
  python) echo python3,python3-venv,ca-certificates ;;
  redis) echo redis-server ;;
  esac
}

# Same settings as the upstream images where the Dockerfile or the manifests rely on them.
changes() {
  local -n out=$2
  out=(--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
    --change 'ENV LANG=C.UTF-8'
    --change "LABEL $label=$3")
  case $1 in
  python) out+=(--change 'CMD ["python3"]') ;;
  redis) out+=(--change 'WORKDIR /data'
    --change 'ENTRYPOINT ["docker-entrypoint.sh"]'
    --change 'EXPOSE 6379'
    --change 'CMD ["redis-server"]') ;;
  esac
}

inputs_hash() {
  {
    cat "${BASH_SOURCE[0]}" "$here/redis-entrypoint.sh"
    echo "$suite $1 $(packages "$1")"
  } |
    sha256sum | cut -c1-16
}

has_image() { # engine ref hash
  [[ $("$1" image inspect --format "{{ index .Config.Labels \"$label\" }}" "$2" 2>/dev/null) == "$3" ]]
}

rootfs_tarball() { # name hash -> path of a cached tarball
  local name=$1 hash=$2 tarball="$cache/$1-$2.tar" dir
  if [[ -s $tarball ]]; then
    echo "$tarball"
    return
  fi
  if [[ $(id -u) -ne 0 ]] || ! command -v debootstrap >/dev/null 2>&1; then
    log "building a base image needs root and debootstrap"
    exit 77
  fi
  mkdir -p "$cache"
  dir=$(mktemp -d "$cache/rootfs-$name.XXXXXX")
  # shellcheck disable=SC2064 # expand now: the trap must remove this very directory
  trap "rm -rf '$dir'" EXIT
  log "debootstrap $suite ($(packages "$name")) from $(mirror)"
  debootstrap --variant=minbase --include="$(packages "$name")" "$suite" "$dir" "$(mirror)" >&2
  if [[ $name == redis ]]; then
    install -m 0755 "$here/redis-entrypoint.sh" "$dir/usr/local/bin/docker-entrypoint.sh"
    install -d -m 0777 "$dir/data"
  fi
  # Left out as in upstream Debian images (lists, caches, docs, logs), plus translations.
  rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/* "$dir"/var/cache/debconf/*-old \
    "$dir"/usr/share/doc/* "$dir"/usr/share/man/* "$dir"/usr/share/info/* "$dir"/usr/share/locale/* \
    "$dir"/var/log/* "$dir"/tmp/* "$dir"/root/.cache
  tar --numeric-owner -C "$dir" -cf "$tarball.partial" .
  rm -f "$cache/$name"-*.tar # an earlier version's
  mv "$tarball.partial" "$tarball"
  rm -rf "$dir"
  trap - EXIT
  echo "$tarball"
}

engines=(docker)
if $podman; then
  engines+=(podman)
fi

missing() { # name hash: true when some engine lacks this version of the image
  local engine
  for engine in "${engines[@]}"; do
    has_image "$engine" "$(image_ref "$1")" "$2" || return 0
  done
  return 1
}

# The root filesystems first, side by side: debootstrap mostly waits on the mirror.
pids=()
for name in "$@"; do
  hash=$(inputs_hash "$name")
  if missing "$name" "$hash"; then
    rootfs_tarball "$name" "$hash" >/dev/null &
    pids+=("$!")
  fi
done
for pid in "${pids[@]}"; do
  wait "$pid" || exit "$?"
done

for name in "$@"; do
  ref=$(image_ref "$name")
  hash=$(inputs_hash "$name")
  for engine in "${engines[@]}"; do
    if has_image "$engine" "$ref" "$hash"; then
      continue
    fi
    tarball=$(rootfs_tarball "$name" "$hash")
    declare -a change_args
    changes "$name" change_args "$hash"
    old=$("$engine" image inspect --format '{{.Id}}' "$ref" 2>/dev/null || true)
    log "$engine import $ref"
    "$engine" import "${change_args[@]}" "$tarball" "$ref" >/dev/null
    if [[ -n $old ]]; then
      "$engine" rmi "$old" >/dev/null 2>&1 || true # superseded; kept if still in use
    fi
  done
  echo "$ref"
done
