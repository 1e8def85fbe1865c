#!/usr/bin/env bash
# Brings up what lessl's Docker backend, tests and examples need on a Debian machine:
#  - the Docker engine (docker.io), started with no bridge network when none answers;
#  - busybox-static (the base image is built from /bin/busybox);
#  - gcc and libc6-dev (npm run build compiles the in-container agent, packages/docker/agent);
#  - openssl and systemd (systemd-analyze) for the TLS and deploy tests;
#  - Debian's docker-registry on 127.0.0.1:5000 (loopback only), for pull tests.
# Safe to run repeatedly: it only installs or starts what is missing.
set -euo pipefail

SOCK=${DOCKER_SOCK:-/var/run/docker.sock}
LOGDIR=${LESSL_LOGDIR:-/tmp}
say() { printf 'lessl: %s\n' "$*"; }

engine_up() { curl -fsS --max-time 3 --unix-socket "$SOCK" http://localhost/_ping >/dev/null 2>&1; }
registry_up() { curl -fsS --max-time 3 http://127.0.0.1:5000/v2/ >/dev/null 2>&1; }

need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
command -v curl >/dev/null 2>&1 || need+=(curl)
# the in-container agent of warm containers is built from source (npm run build: gcc -static)
command -v gcc >/dev/null 2>&1 || need+=(gcc)
dpkg -s libc6-dev >/dev/null 2>&1 || need+=(libc6-dev)
# the TLS tests make a self-signed certificate; the deploy test checks the systemd unit
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    say "missing Debian packages: ${need[*]}; run as root, or: sudo apt-get install -y ${need[*]}"
    exit 1
  fi
  say "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >"$LOGDIR/lessl-apt.log" 2>&1 || {
    cat "$LOGDIR/lessl-apt.log"
    exit 1
  }
fi

if ! engine_up; then
  if [ "$(id -u)" != 0 ]; then
    say "no Docker engine answers on $SOCK; start one as root: dockerd --bridge=none --iptables=false --ip-forward=false &"
    exit 1
  fi
  say "starting dockerd (--bridge=none: containers get no network unless asked), log in $LOGDIR/lessl-dockerd.log"
  nohup dockerd --bridge=none --iptables=false --ip-forward=false >"$LOGDIR/lessl-dockerd.log" 2>&1 &
  for _ in $(seq 1 60); do
    engine_up && break
    sleep 1
  done
  engine_up || {
    say "dockerd did not come up; its log:"
    tail -40 "$LOGDIR/lessl-dockerd.log"
    exit 1
  }
fi
say "Docker engine answers ($(curl -fsS --unix-socket "$SOCK" http://localhost/version | sed -n 's/.*"Version":"\([^"]*\)".*/\1/p' | head -1))"

if ! registry_up && [ "$(id -u)" = 0 ]; then
  cfg="$LOGDIR/lessl-registry.yml"
  mkdir -p "$LOGDIR/lessl-registry-data"
  cat >"$cfg" <<YML
version: 0.1
storage:
  filesystem:
    rootdirectory: $LOGDIR/lessl-registry-data
http:
  addr: 127.0.0.1:5000
YML
  nohup docker-registry serve "$cfg" >"$LOGDIR/lessl-registry.log" 2>&1 &
  for _ in $(seq 1 30); do
    registry_up && break
    sleep 1
  done
fi
registry_up && say "local registry answers on 127.0.0.1:5000" || say "no local registry on 127.0.0.1:5000 (pull tests need it)"
