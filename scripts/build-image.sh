#!/usr/bin/env bash
# Build an image from a Dockerfile that needs BuildKit (worker/Dockerfile's secret mounts) with the
# builder this machine has, the first that works of: a docker CLI on PATH with the buildx plugin; a
# docker CLI older than 23, which drives the engine's own BuildKit (DOCKER_BUILDKIT=1); podman.
# The first docker on PATH may lack buildx where a later, older one still builds. `make image` and
# `make kind-up` and the e2e tests (e2e/images.py) all build through here.
# The machine's pip settings and CA bundle go to the build as the optional secrets `pipconf` and
# `cacert` (what it takes to reach PyPI behind a TLS-inspecting proxy), never into a layer.
#
# Usage: scripts/build-image.sh TAG CONTEXT [NAME=VALUE...]   build CONTEXT as TAG, with build args
#        scripts/build-image.sh --which                       print "ENGINE<tab>DESCRIPTION" of the
#                                                             builder (ENGINE: docker or podman)
# IMAGE_BUILDER=docker or IMAGE_BUILDER=podman narrows the choice.
set -euo pipefail

die() {
  echo "${0##*/}: $*" >&2
  exit 1
}

# Every docker CLI on PATH, in PATH order, each directory once (/bin is often /usr/bin).
docker_clis() {
  local dir dirs real seen=:
  IFS=: read -ra dirs <<<"$PATH"
  for dir in "${dirs[@]}"; do
    [[ -f ${dir:-.}/docker && -x ${dir:-.}/docker ]] || continue
    real=$(cd -P "${dir:-.}" && pwd -P)
    [[ $seen == *":$real:"* ]] && continue
    seen+="$real:"
    echo "$real/docker"
  done
}

# Sets engine, description and build (the command, without its arguments).
choose_builder() {
  local wanted=${IMAGE_BUILDER:-} cli version clis=0
  case $wanted in
  "" | docker | podman) ;;
  *) die "IMAGE_BUILDER must be docker or podman, not $wanted" ;;
  esac
  if [[ $wanted != podman ]]; then
    while IFS= read -r cli; do
      clis=$((clis + 1))
      if "$cli" buildx version >/dev/null 2>&1; then
        # One image manifest, no provenance or SBOM attestations: a local image is for `kind load`
        # and `docker run`, and `kind load` cannot import the multi-manifest archive Docker's
        # containerd image store saves otherwise (kind #3795, #4236). The release has its own build.
        engine=docker description="$cli build (BuildKit via buildx)"
        build=("$cli" build --provenance=false --sbom=false)
        return
      fi
      # Clients before 23 talk to the engine's BuildKit themselves; later ones need buildx.
      version=$("$cli" version --format '{{.Client.Version}}' 2>/dev/null || true)
      if [[ $version =~ ^([0-9]+)\. ]] && ((BASH_REMATCH[1] < 23)); then
        engine=docker description="$cli build (the engine's BuildKit, DOCKER_BUILDKIT=1)"
        build=(env DOCKER_BUILDKIT=1 "$cli" build)
        return
      fi
    done < <(docker_clis)
  fi
  if [[ $wanted != docker ]] && command -v podman >/dev/null 2>&1; then
    # Host networking: podman's own build network is what fails on some machines.
    engine=podman description="podman build" build=(podman build --network host --format docker)
    return
  fi
  if [[ $wanted == podman ]]; then
    die "IMAGE_BUILDER=podman, and podman is not on PATH"
  elif ((clis == 0)); then
    die "nothing to build the image with: no docker CLI$([[ -n $wanted ]] || echo ' and no podman') on PATH"
  fi
  die "docker needs its buildx plugin to build with BuildKit: install docker-buildx (Debian, Ubuntu) or docker-buildx-plugin (Docker's packages), see https://github.com/docker/buildx#installing"
}

choose_builder
if [[ ${1:-} == --which ]]; then
  printf '%s\t%s\n' "$engine" "$description"
  exit 0
fi
[[ $# -ge 2 ]] || die "usage: $0 TAG CONTEXT [NAME=VALUE...] | --which"
tag=$1 context=$2
shift 2

# The Dockerfile's Python base, pulled first when it is not here, so that a machine that cannot
# pull it is told so in one line rather than from inside the build.
base=$(sed -n 's/^ARG PYTHON_IMAGE=//p' "$context/Dockerfile")
args=()
for arg in "$@"; do
  [[ $arg == PYTHON_IMAGE=* ]] && base=${arg#PYTHON_IMAGE=}
  args+=(--build-arg "$arg")
done
if [[ -n $base ]] && ! "$engine" image inspect "$base" >/dev/null 2>&1; then
  if ! pulled=$("$engine" pull "$base" 2>&1 >/dev/null); then
    die "cannot pull the base image $base (${pulled##*$'\n'}); PYTHON_IMAGE=<a Debian-based Python 3.11+ image here> builds on that instead"
  fi
fi

secrets=()
for conf in "${PIP_CONFIG_FILE:-}" /etc/pip.conf /etc/xdg/pip/pip.conf \
  "$HOME/.config/pip/pip.conf" "$HOME/.pip/pip.conf"; do
  if [[ -n $conf && -f $conf ]]; then
    secrets+=(--secret "id=pipconf,src=$conf")
    break
  fi
done
if [[ -f /etc/ssl/certs/ca-certificates.crt ]]; then
  secrets+=(--secret "id=cacert,src=/etc/ssl/certs/ca-certificates.crt")
fi

echo "${0##*/}: $tag from $context by $description" >&2
# ${a[@]+...}: bash 3.2 (macOS) calls an empty array unbound.
"${build[@]}" --tag "$tag" ${secrets[@]+"${secrets[@]}"} ${args[@]+"${args[@]}"} "$context"
