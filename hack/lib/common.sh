# shellcheck shell=bash disable=SC2034 # variables are used by the scripts that source this file
# Shared paths and helpers for the hack/ scripts; sourced, never run.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
K8S_VERSION=v1.37.2
ETCD_VERSION=v3.6.16
CACHE_DIR=${REDIS_OPERATOR_CACHE:-$HOME/.cache/redis-operator}
K8S_BIN=$CACHE_DIR/kubernetes-$K8S_VERSION
ETCD_BIN=$CACHE_DIR/etcd-$ETCD_VERSION
KWOK_VERSION=v0.8.0
KWOK_BIN=$CACHE_DIR/kwok-$KWOK_VERSION
STATE_DIR=${LOCAL_CLUSTER_DIR:-$REPO_ROOT/.local-cluster}
export GOTOOLCHAIN=local

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Installs Debian packages that provide the named commands, only where a command is missing.
# Arguments are command:package pairs.
ensure_packages() {
  local missing=() pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
