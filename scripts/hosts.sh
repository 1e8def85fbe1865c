#!/usr/bin/env bash
# Several real Docker engines and a two-node Swarm on this one machine, for lessl's tests and CI.
#
#   bash scripts/hosts.sh up       # idempotent: brings up what is missing
#   bash scripts/hosts.sh status   # what runs
#   bash scripts/hosts.sh down     # stops everything it started and removes it (safe to repeat)
#
# Each engine is a separate "machine": its own network namespace (lessl-<name>) with one veth onto
# a bridge in a shared namespace (lessl-lan) and NO default route, so it can reach the other
# engines and 10.99.0.1 but nothing outside. The root namespace gets one veth on that bridge
# (10.99.0.1/24; no other route changes) so tests reach the engines' TCP ports and the engines
# reach a docker-registry listening on 10.99.0.1:5000.
#   h1 h2 h3  plain engines       10.99.0.11-13
#   s1 s2     Swarm manager/worker 10.99.0.21-22
# Every engine listens on unix:///run/lessl-hosts/<name>/docker.sock and on tcp://<ip>:2376 with
# mutual TLS (CA, server and client certificates under /run/lessl-hosts/certs). The result is
# described in /run/lessl-hosts/hosts.json. The root engine and the 127.0.0.1:5000 registry of
# scripts/engine.sh are not touched. See docs/hosts.md.
set -euo pipefail

BASE=${LESSL_HOSTS_DIR:-/run/lessl-hosts}
CERTS=$BASE/certs
LAN=lessl-lan
SUBNET_PREFIX=10.99.0
ROOT_IP=$SUBNET_PREFIX.1
ROOT_IF=lessl0
REGISTRY=$ROOT_IP:5000
PLAIN=(h1 h2 h3)
SWARM=(s1 s2)
ALL=("${PLAIN[@]}" "${SWARM[@]}")

say() { printf 'lessl-hosts: %s\n' "$*"; }
die() {
  say "$*"
  exit 1
}

addr_of() {
  case $1 in
    h1) echo "$SUBNET_PREFIX.11" ;;
    h2) echo "$SUBNET_PREFIX.12" ;;
    h3) echo "$SUBNET_PREFIX.13" ;;
    s1) echo "$SUBNET_PREFIX.21" ;;
    s2) echo "$SUBNET_PREFIX.22" ;;
    *) die "unknown engine $1" ;;
  esac
}
ns_of() { echo "lessl-$1"; }
dir_of() { echo "$BASE/$1"; }
sock_of() { echo "$BASE/$1/docker.sock"; }
pid_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
pid_of_file() { [ -s "$1" ] && cat "$1" || true; }
ns_exists() { [ -e "/run/netns/$1" ]; }
# Closes every inherited descriptor but 0-2 in this (sub)shell: a daemon started from here must not
# keep its caller's files open (e.g. a `flock` lock it was started under, held for as long as it runs).
close_fds() {
  local fd
  for fd in $(ls "/proc/$BASHPID/fd"); do
    [ "$fd" -gt 2 ] && eval "exec $fd>&-" 2>/dev/null
  done
  return 0
}

engine_up() { curl -fsS --max-time 3 --unix-socket "$(sock_of "$1")" http://localhost/_ping >/dev/null 2>&1; }
registry_up() { curl -fsS --max-time 3 "http://$REGISTRY/v2/" >/dev/null 2>&1; }
dk() {
  local name=$1
  shift
  DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 docker -H "unix://$(sock_of "$name")" "$@"
}

# ---------------------------------------------------------------------------------------- up --

install_missing() {
  local need=()
  command -v ip >/dev/null 2>&1 || need+=(iproute2)
  command -v openssl >/dev/null 2>&1 || need+=(openssl)
  command -v nsenter >/dev/null 2>&1 || need+=(util-linux)
  command -v curl >/dev/null 2>&1 || need+=(curl)
  command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
  command -v docker >/dev/null 2>&1 || need+=(docker-cli)
  command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
  if [ ${#need[@]} -gt 0 ]; then
    say "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/tmp/lessl-hosts-apt.log 2>&1 || {
      cat /tmp/lessl-hosts-apt.log
      exit 1
    }
  fi
}

make_certs() {
  mkdir -p "$CERTS"
  chmod 700 "$CERTS"
  local c=$CERTS
  if [ ! -s "$c/ca.pem" ]; then
    openssl genrsa -out "$c/ca-key.pem" 2048 2>/dev/null
    openssl req -x509 -new -key "$c/ca-key.pem" -sha256 -days 30 -subj "/CN=lessl-hosts test CA" \
      -out "$c/ca.pem" 2>/dev/null
  fi
  if [ ! -s "$c/cert.pem" ]; then
    openssl genrsa -out "$c/key.pem" 2048 2>/dev/null
    openssl req -new -key "$c/key.pem" -subj "/CN=lessl-client" -out "$c/client.csr" 2>/dev/null
    printf 'extendedKeyUsage = clientAuth\n' >"$c/client.ext"
    openssl x509 -req -in "$c/client.csr" -CA "$c/ca.pem" -CAkey "$c/ca-key.pem" -CAcreateserial \
      -days 30 -sha256 -extfile "$c/client.ext" -out "$c/cert.pem" 2>/dev/null
    rm -f "$c/client.csr" "$c/client.ext"
  fi
  local name ip
  for name in "${ALL[@]}"; do
    [ -s "$c/$name-cert.pem" ] && continue
    ip=$(addr_of "$name")
    openssl genrsa -out "$c/$name-key.pem" 2048 2>/dev/null
    openssl req -new -key "$c/$name-key.pem" -subj "/CN=$name" -out "$c/$name.csr" 2>/dev/null
    printf 'subjectAltName = IP:%s\nextendedKeyUsage = serverAuth\n' "$ip" >"$c/$name.ext"
    openssl x509 -req -in "$c/$name.csr" -CA "$c/ca.pem" -CAkey "$c/ca-key.pem" -CAcreateserial \
      -days 30 -sha256 -extfile "$c/$name.ext" -out "$c/$name-cert.pem" 2>/dev/null
    rm -f "$c/$name.csr" "$c/$name.ext"
  done
  chmod 600 "$c"/*key.pem
}

lan_up() {
  ns_exists $LAN || ip netns add $LAN
  ip -n $LAN link set lo up
  ip -n $LAN link show br0 >/dev/null 2>&1 || ip -n $LAN link add br0 type bridge
  ip -n $LAN link set br0 up
  # the root namespace's one leg on the lan: 10.99.0.1/24 (a connected route only)
  if ! ip link show $ROOT_IF >/dev/null 2>&1; then
    ip link add $ROOT_IF type veth peer name v-root netns $LAN
  fi
  ip -n $LAN link set v-root master br0 up
  [[ $(ip -o addr show dev $ROOT_IF) == *"inet $ROOT_IP/"* ]] || ip addr add "$ROOT_IP/24" dev $ROOT_IF
  ip link set $ROOT_IF up
}

engine_ns_up() {
  local name=$1 ns ip
  ns=$(ns_of "$name")
  ip=$(addr_of "$name")
  ns_exists "$ns" || ip netns add "$ns"
  ip -n "$ns" link set lo up
  if ! ip -n "$ns" link show eth0 >/dev/null 2>&1; then
    ip -n $LAN link del "v-$name" 2>/dev/null || true
    ip -n "$ns" link add eth0 type veth peer name "v-$name" netns $LAN
  fi
  ip -n $LAN link set "v-$name" master br0 up
  [[ $(ip -o -n "$ns" addr show dev eth0) == *"inet $ip/"* ]] || ip -n "$ns" addr add "$ip/24" dev eth0
  ip -n "$ns" link set eth0 up
  # no default route, ever: the engine is a machine with no way out
  if [ -n "$(ip -n "$ns" route show default)" ]; then
    die "namespace $ns has a default route; refusing to start an engine there"
  fi
}

write_daemon_json() {
  local name=$1 d ip
  d=$(dir_of "$name")
  ip=$(addr_of "$name")
  cat >"$d/daemon.json" <<JSON
{
  "hosts": ["unix://$d/docker.sock", "tcp://$ip:2376"],
  "tls": true,
  "tlsverify": true,
  "tlscacert": "$CERTS/ca.pem",
  "tlscert": "$CERTS/$name-cert.pem",
  "tlskey": "$CERTS/$name-key.pem",
  "data-root": "$d/data",
  "exec-root": "$d/exec",
  "pidfile": "$d/dockerd.pid",
  "deprecated-key-path": "$d/key.json",
  "bridge": "none",
  "iptables": false,
  "ip-forward": false,
  "ip-masq": false,
  "no-new-privileges": true,
  "cgroup-parent": "/lessl-$name",
  "insecure-registries": ["$REGISTRY"],
  "log-driver": "json-file",
  "max-concurrent-downloads": 2
}
JSON
}

# Every process engine N started that outlives its dockerd: its containerd (by pidfile), the
# shims and whatever else runs in its network namespace or names its directory on its command
# line, and its containers' processes (each in its own namespaces, found by their cgroup parent).
engine_leftovers() {
  local name=$1 d ns p
  d=$(dir_of "$name")
  ns=$(ns_of "$name")
  {
    pid_of_file "$d/exec/containerd/containerd.pid"
    echo
    ns_exists "$ns" && ip netns pids "$ns" 2>/dev/null
    for p in /proc/[0-9]*; do
      p=${p#/proc/}
      case $(cat "/proc/$p/comm" 2>/dev/null) in
        containerd* | dockerd | runc | docker-proxy)
          if tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -qF "$d/"; then
            echo "$p"
            continue
          fi
          ;;
      esac
      grep -qE "/lessl-$name(/|\$)" "/proc/$p/cgroup" 2>/dev/null && echo "$p"
    done
  } | grep -E '^[0-9]+$' | sort -un || true
}

engine_start() {
  local name=$1 d ns
  d=$(dir_of "$name")
  ns=$(ns_of "$name")
  engine_up "$name" && return 0
  local old
  old=$(pid_of_file "$d/dockerd.pid")
  # a dockerd that is starting or dying gets a few seconds to answer or to go
  local i
  for i in $(seq 1 25); do
    pid_alive "$old" || break
    engine_up "$name" && return 0
    sleep 0.2
  done
  if pid_alive "$old"; then
    die "$name: dockerd $old runs but does not answer on $(sock_of "$name"); run: bash scripts/hosts.sh down"
  fi
  # a dockerd that was killed (SIGKILL) leaves its containerd, shims and containers running, and
  # their pid files: a new dockerd cannot start beside them
  local left
  left=$(engine_leftovers "$name")
  # shellcheck disable=SC2086
  [ -n "$left" ] && kill_wait 30 $left
  rm -f "$d/dockerd.pid" "$d/docker.sock" "$d/exec/containerd/containerd.pid"
  mkdir -p "$d/data" "$d/exec"
  write_daemon_json "$name"
  # nsenter (not `ip netns exec`, which remounts /sys and breaks dockerd's cgroup checks);
  # its own UTS (hostname) and mount namespace (the data-root's mounts stay inside).
  (
    close_fds
    exec setsid nsenter --net="/run/netns/$ns" unshare --uts --mount --propagation slave \
      sh -c "hostname $name; exec dockerd --config-file $d/daemon.json"
  ) </dev/null >"$d/dockerd.log" 2>&1 &
}

engine_wait() {
  local name=$1 i
  for i in $(seq 1 100); do
    engine_up "$name" && return 0
    sleep 0.2
  done
  say "$name: dockerd did not come up; its log:"
  tail -30 "$(dir_of "$name")/dockerd.log"
  exit 1
}

registry_start() {
  registry_up && return 0
  local old
  old=$(pid_of_file "$BASE/registry.pid")
  pid_alive "$old" && kill "$old" 2>/dev/null || true
  mkdir -p "$BASE/registry-data"
  cat >"$BASE/registry.yml" <<YML
version: 0.1
storage:
  filesystem:
    rootdirectory: $BASE/registry-data
  delete:
    enabled: true
http:
  addr: $REGISTRY
YML
  (
    close_fds
    exec setsid docker-registry serve "$BASE/registry.yml"
  ) </dev/null >"$BASE/registry.log" 2>&1 &
  echo $! >"$BASE/registry.pid"
  local i
  for i in $(seq 1 50); do
    registry_up && return 0
    sleep 0.2
  done
  tail -20 "$BASE/registry.log"
  die "the registry on $REGISTRY did not come up"
}

swarm_state() { dk "$1" info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null || echo unknown; }

swarm_up() {
  local manager=${SWARM[0]} worker=${SWARM[1]} maddr
  maddr=$(addr_of "$manager")
  if [ "$(swarm_state "$manager")" != active ]; then
    say "swarm init on $manager ($maddr)"
    dk "$manager" swarm init --advertise-addr "$maddr" --listen-addr "$maddr:2377" >/dev/null
  fi
  if [ "$(swarm_state "$worker")" != active ]; then
    local token
    token=$(dk "$manager" swarm join-token -q worker)
    say "$worker joins the swarm as a worker"
    dk "$worker" swarm join --token "$token" --advertise-addr "$(addr_of "$worker")" \
      --listen-addr "$(addr_of "$worker"):2377" "$maddr:2377" >/dev/null
  fi
  local i ready
  for i in $(seq 1 150); do
    ready=$(dk "$manager" node ls --format '{{.Status}}' 2>/dev/null | grep -c '^Ready$' || true)
    [ "$ready" -ge 2 ] && return 0
    sleep 0.2
  done
  dk "$manager" node ls || true
  die "the swarm did not get 2 Ready nodes"
}

write_hosts_json() {
  local out=$BASE/hosts.json.tmp first=1 name d ip
  {
    printf '{\n  "registry": "%s",\n  "hosts": [\n' "$REGISTRY"
    for name in "${ALL[@]}"; do
      d=$(dir_of "$name")
      ip=$(addr_of "$name")
      [ $first = 1 ] || printf ',\n'
      first=0
      printf '    {\n'
      printf '      "name": "%s",\n      "socket": "%s",\n      "url": "tcp://%s:2376",\n' "$name" "$d/docker.sock" "$ip"
      printf '      "tls": { "ca": "%s", "cert": "%s", "key": "%s" },\n' "$CERTS/ca.pem" "$CERTS/cert.pem" "$CERTS/key.pem"
      printf '      "pidfile": "%s",\n      "address": "%s",\n      "netns": "%s"\n' "$d/dockerd.pid" "$ip" "$(ns_of "$name")"
      printf '    }'
    done
    printf '\n  ],\n  "swarm": { "manager": "%s", "workers": ["%s"] }\n}\n' "${SWARM[0]}" "${SWARM[1]}"
  } >"$out"
  mv "$out" "$BASE/hosts.json"
}

cmd_up() {
  [ "$(id -u)" = 0 ] || die "run as root (it creates network namespaces and starts dockerd)"
  install_missing
  mkdir -p "$BASE"
  make_certs
  lan_up
  registry_start
  local name
  for name in "${ALL[@]}"; do
    mkdir -p "$(dir_of "$name")"
    engine_ns_up "$name"
    engine_start "$name"
  done
  for name in "${ALL[@]}"; do engine_wait "$name"; done
  swarm_up
  write_hosts_json
  say "up: ${ALL[*]} (swarm ${SWARM[0]} + ${SWARM[1]}), registry $REGISTRY; $BASE/hosts.json"
}

# -------------------------------------------------------------------------------------- down --

# Kill pids (TERM, then KILL after $2 tenths of a second) and wait until they are gone.
kill_wait() {
  local tenths=$1
  shift
  local p i alive
  for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done
  for i in $(seq 1 "$tenths"); do
    alive=0
    for p in "$@"; do pid_alive "$p" && alive=1; done
    [ $alive = 0 ] && return 0
    sleep 0.1
  done
  for p in "$@"; do kill -KILL "$p" 2>/dev/null || true; done
  for i in $(seq 1 50); do
    alive=0
    for p in "$@"; do pid_alive "$p" && alive=1; done
    [ $alive = 0 ] && return 0
    sleep 0.1
  done
}

engine_stop() {
  local name=$1 d ns pid pids
  d=$(dir_of "$name")
  ns=$(ns_of "$name")
  pid=$(pid_of_file "$d/dockerd.pid")
  if pid_alive "$pid"; then
    # dockerd stops its containers and its containerd on TERM
    kill_wait 200 "$pid"
  fi
  # whatever it started still runs when it was killed: containerd, shims, containers (engine_leftovers)
  pids=$(engine_leftovers "$name")
  # shellcheck disable=SC2086
  [ -n "$pids" ] && kill_wait 30 $pids
  rm -f "$d/dockerd.pid"
}

unmount_leftovers() {
  local m
  # deepest first
  for m in $(awk -v b="$BASE/" 'index($2, b) == 1 { print $2 }' /proc/mounts | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
}

cmd_down() {
  [ "$(id -u)" = 0 ] || die "run as root"
  local name pid
  for name in "${ALL[@]}"; do
    [ -d "$(dir_of "$name")" ] || continue
    engine_stop "$name" &
  done
  wait
  pid=$(pid_of_file "$BASE/registry.pid")
  pid_alive "$pid" && kill_wait 30 "$pid"
  unmount_leftovers
  for name in "${ALL[@]}"; do
    ns_exists "$(ns_of "$name")" && ip netns del "$(ns_of "$name")"
  done
  ip link del $ROOT_IF 2>/dev/null || true
  ns_exists $LAN && ip netns del $LAN
  rm -rf "$BASE"
  # the engines' cgroup parents (cgroup v1 and v2 layouts); only empty ones can go
  local cg
  for cg in /sys/fs/cgroup/*/lessl-* /sys/fs/cgroup/lessl-*; do
    [ -d "$cg" ] && rmdir "$cg" 2>/dev/null || true
  done
  say "down"
}

# ------------------------------------------------------------------------------------ status --

cmd_status() {
  local name d pid state
  if registry_up; then say "registry $REGISTRY answers"; else say "registry $REGISTRY: not running"; fi
  for name in "${ALL[@]}"; do
    d=$(dir_of "$name")
    pid=$(pid_of_file "$d/dockerd.pid")
    if engine_up "$name"; then
      state="up (dockerd $pid, $(addr_of "$name"), engine $(dk "$name" info --format '{{.ID}}' 2>/dev/null | cut -c1-14)…"
      state="$state, swarm $(swarm_state "$name"))"
    elif ns_exists "$(ns_of "$name")"; then
      state="down (namespace $(ns_of "$name") exists)"
    else
      state="down"
    fi
    say "$name: $state"
  done
  if engine_up "${SWARM[0]}"; then dk "${SWARM[0]}" node ls 2>/dev/null || true; fi
  [ -s "$BASE/hosts.json" ] && say "$BASE/hosts.json written" || true
}

case ${1:-} in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *)
    echo "usage: bash scripts/hosts.sh up|down|status" >&2
    exit 2
    ;;
esac
