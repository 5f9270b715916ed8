#!/usr/bin/env bash
# Make a Docker engine answer for the container e2e: start the installed dockerd when none runs.
# Installs nothing; exits non-zero (and says why) when no engine can be had, so callers can skip.
set -euo pipefail

die() {
  echo "${0##*/}: $*" >&2
  exit 1
}

timeout_s="${DOCKER_START_TIMEOUT:-60}"
log="${DOCKERD_LOG:-/var/log/job-wq-2-dockerd.log}"

if docker info >/dev/null 2>&1; then
  exit 0
fi
if ! command -v dockerd >/dev/null 2>&1; then
  die "no Docker engine answers and dockerd is not installed"
fi
if [[ $(id -u) -ne 0 ]]; then
  die "dockerd is installed but not running; starting it needs root"
fi

# setsid: the daemon must outlive this script and not receive the caller's terminal signals.
setsid dockerd >"$log" 2>&1 </dev/null &
pid=$!
deadline=$((SECONDS + timeout_s))
until docker info >/dev/null 2>&1; do
  if ! kill -0 "$pid" 2>/dev/null; then
    die "dockerd exited; last lines of $log:"$'\n'"$(tail -n 20 "$log")"
  fi
  if ((SECONDS >= deadline)); then
    die "dockerd (pid $pid) did not answer within ${timeout_s}s; see $log"
  fi
  sleep 1
done
echo "${0##*/}: dockerd (pid $pid) answers; log in $log"
