#!/usr/bin/env bash
# Makes a Node base image from this machine's own files, for engines that reach no registry:
# the host's `node` binary, the shared libraries it loads (ldd), /etc/passwd and /etc/group
# with root and an unprivileged user `lessl` (uid and gid 10001), and a /tmp. No shell, no
# package manager: `node` is the image's only program. Nothing is downloaded.
#
#   bash scripts/node-base.sh [TAG]      # default TAG: lessl/node-base:20
#
# The image is made by the SDK's Node image builder (packages/docker/src/node-image.ts, the one
# that also makes the reaper's image), run through packages/docker/dist/node-image-main.js; the
# packages are built first when they are not. It is labelled with the node version it holds; a
# second run with the same node answers at once. The engine is found as the docker CLI finds it
# (DOCKER_HOST, DOCKER_CONTEXT, the current context, ...). Prints the tag.
set -euo pipefail
cd "$(dirname "$0")/.."

main=packages/docker/dist/node-image-main.js
[ -f "$main" ] || npm run build --silent >&2
node "$main" "${1:-lessl/node-base:20}"
