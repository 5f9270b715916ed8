#!/usr/bin/env bash
# Re-resolve every lock the repository installs from, with hashes, in one go (`make lock`):
#   requirements-dev.txt                  the venv: requirements-dev.in, the worker and its "local" extra
#   worker/requirements-local.txt         `make demo`'s venv: the worker and its "local" extra
#   worker/requirements.txt               the image: the worker's runtime and its build backend
#   examples/thumbnails/requirements.txt  the example handler's image
# The last three are resolved under the first as a constraint, so a package has one version in
# all of them. Each resolution takes the newest versions the declared ranges allow. Each lock's
# header keeps the exact command, which Renovate's pip-compile manager re-runs for its updates.
set -euo pipefail

die() {
  echo "${0##*/}: $*" >&2
  exit 1
}

cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v uv >/dev/null || die "uv is not on PATH: run it as \`make lock\`, which puts .venv/bin first"

compile() {
  uv pip compile --quiet --universal \
    --python-version 3.11 --generate-hashes "$@"
}

compile --upgrade -o requirements-dev.txt requirements-dev.in worker/pyproject.toml --extra local
# worker/build.in names the build backend: the Makefile and the image install ./worker without
# build isolation, so setuptools must come from the lock too.
compile -c requirements-dev.txt -o worker/requirements-local.txt \
  worker/pyproject.toml --extra local worker/build.in
compile -c requirements-dev.txt -o worker/requirements.txt worker/pyproject.toml worker/build.in
compile -c requirements-dev.txt -o examples/thumbnails/requirements.txt \
  examples/thumbnails/requirements.in
