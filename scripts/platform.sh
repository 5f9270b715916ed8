# shellcheck shell=bash
# Sourced by scripts/kind.sh and scripts/kustomize.sh: the helpers both need to pick, fetch and
# check a pinned release binary for this machine.

die() {
  echo "${0##*/}: $*" >&2
  exit 1
}

# This machine as release assets name it: linux-amd64, darwin-arm64, ...; fails elsewhere.
platform() {
  local os arch
  case "$(uname -s)" in
  Linux) os=linux ;;
  Darwin) os=darwin ;;
  *) return 1 ;;
  esac
  case "$(uname -m)" in
  x86_64 | amd64) arch=amd64 ;;
  aarch64 | arm64) arch=arm64 ;;
  *) return 1 ;;
  esac
  echo "$os-$arch"
}

# sha256sum on Linux, shasum on macOS.
sha256_of() {
  if command -v sha256sum >/dev/null 2>&1; then
    sha256sum "$1" | cut -d ' ' -f 1
  else
    shasum -a 256 "$1" | cut -d ' ' -f 1
  fi
}

# Download URL to DEST, keeping it only if its sha256 is WANT: a wrong file is deleted and named
# (exit 1); a failed download returns 1 and leaves DEST as it was.
fetch_checked() {
  local url=$1 dest=$2 want=$3 tmp got
  mkdir -p "$(dirname "$dest")"
  tmp=$(mktemp "$dest.XXXXXX")
  if ! curl -fsSL --retry 3 -o "$tmp" "$url"; then
    rm -f "$tmp"
    return 1
  fi
  got=$(sha256_of "$tmp")
  if [[ $got != "$want" ]]; then
    rm -f "$tmp"
    die "${url##*/} has sha256 $got, expected $want; not using it"
  fi
  mv -f "$tmp" "$dest"
}
