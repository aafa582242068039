#!/usr/bin/env bash
# Installs Debian's chromium for the console's browser tests (driven by playwright-core, which
# downloads no browser) when it is missing, and prints its path. Quick when it is installed.
#   CAIRN_CHROMIUM=/path/to/chromium   use that browser instead
set -euo pipefail
log() { echo "browser.sh: $*" >&2; }

if [[ -n ${CAIRN_CHROMIUM:-} ]]; then
  [[ -x $CAIRN_CHROMIUM ]] || { log "CAIRN_CHROMIUM=$CAIRN_CHROMIUM is not executable"; exit 1; }
  echo "$CAIRN_CHROMIUM"
  exit 0
fi
find_chromium() { command -v chromium || command -v chromium-browser || true; }
path=$(find_chromium)
if [[ -z $path ]]; then
  sudo=()
  if ((EUID != 0)); then
    command -v sudo >/dev/null || { log "chromium is missing; install it as root: apt-get install -y chromium"; exit 1; }
    sudo=(sudo -n)
  fi
  log "installing chromium with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get install -y --no-install-recommends chromium >&2 ||
    { "${sudo[@]}" apt-get update >&2 && "${sudo[@]}" apt-get install -y --no-install-recommends chromium >&2; }
  path=$(find_chromium)
  [[ -n $path ]] || { log "chromium was not installed"; exit 1; }
fi
echo "$path"
