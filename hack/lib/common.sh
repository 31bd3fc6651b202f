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
HELM_VERSION=v4.3.2
HELM_BIN=$CACHE_DIR/helm-$HELM_VERSION
KUBE_ROUTER_VERSION=v2.1.0
KUBE_ROUTER_BIN=$CACHE_DIR/kube-router-$KUBE_ROUTER_VERSION
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
  # Debian's redis-server package starts a system-wide Redis listening on every address; the
  # node agent runs its own. invoke-rc.d asks policy-rc.d, and 101 means "start nothing".
  local policy=/usr/sbin/policy-rc.d own_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && own_policy=1
  fi
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ "$own_policy" = 1 ] && rm -f "$policy"
  stop_system_redis
}

# Stops and disables a system Redis daemon (started by systemd despite policy-rc.d, or left
# from an earlier install), so no Redis but the pods' listens on this host.
stop_system_redis() {
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet redis-server 2>/dev/null; then
    log "stopping the system redis-server service"
    systemctl disable --now redis-server >/dev/null 2>&1 || true
  elif [ -f /run/redis/redis-server.pid ] && kill -0 "$(cat /run/redis/redis-server.pid)" 2>/dev/null; then
    log "stopping the system redis-server daemon"
    kill "$(cat /run/redis/redis-server.pid)" || true
  fi
}
