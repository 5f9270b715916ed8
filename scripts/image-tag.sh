#!/usr/bin/env bash
# The image tag of a release: the git tag without its "v" (v0.1.0 -> 0.1.0, v1.2.0-rc.1 -> 1.2.0-rc.1).
# The release workflow tags the image with this; overlays/ghcr and the docs use the same form.
#   scripts/image-tag.sh GIT_TAG
set -euo pipefail

die() {
  echo "${0##*/}: $*" >&2
  exit 1
}

[[ $# -eq 1 ]] || {
  sed -n '4s/^# //p' "${BASH_SOURCE[0]}" >&2
  exit 2
}
# Semantic versioning's core and optional pre-release, nothing else: a tag like v1.2 or v1.2.3.4
# would give an image tag that sorts and compares differently from every other release.
[[ $1 =~ ^v(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?$ ]] ||
  die "release tags look like v1.2.3 or v1.2.3-rc.1, not '$1'"
echo "${1#v}"
