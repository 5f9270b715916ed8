#!/usr/bin/env bash
# Whether a push or pull request changes anything under PATH...: prints true or false.
#   scripts/changed.sh BASE PATH...   BASE: the commit before (a push's `before`, a pull request's base)
# When BASE is empty, all zeros (a new branch or tag) or not in the clone, the answer is true:
# a check that cannot tell runs rather than skips.
set -euo pipefail

[[ $# -ge 2 ]] || {
  sed -n '3s/^# //p' "${BASH_SOURCE[0]}" >&2
  exit 2
}
base=$1
shift
if [[ -z ${base//0/} ]] || ! git cat-file -e "$base^{commit}" 2>/dev/null; then
  echo true
elif git diff --quiet "$base" HEAD -- "$@"; then
  echo false
else
  echo true
fi
