#!/usr/bin/env bash
# Builds the container image of the task service (deploy/Dockerfile) without reaching any
# network: the Node base comes from scripts/node-base.sh (this machine's own node), and the
# build context is staged here from the built repository with its production dependencies
# only, pruned offline from the installed node_modules. The engine builds with --network none.
#
#   bash scripts/image.sh [TAG]     # default: lessl/lessl:<version> and lessl/lessl:latest
#
# NODE_BASE=<image> uses another base (e.g. node:20-bookworm-slim, when the engine reaches a
# registry) instead of making lessl/node-base. DOCKER_HOST selects the engine. Prints the tag.
# The image is labelled with a digest of its inputs: a second run with nothing changed answers
# at once.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

version=$(node -p "require('./packages/cli/package.json').version")
tags=("${1:-lessl/lessl:$version}")
[ $# -gt 0 ] || tags+=(lessl/lessl:latest)
base=${NODE_BASE:-$(bash scripts/node-base.sh)}

[ -f packages/cli/dist/bin.js ] || npm run build --silent >&2

# the same inputs (the built packages, the lock, deploy's files, the base) as the image the tag has: done
inputs=$({
  docker image inspect --format '{{.Id}}' "$base"
  find packages/*/dist packages/*/bin packages/*/package.json packages/docker/agent/lessl-agent package.json \
    package-lock.json deploy/Dockerfile deploy/healthcheck.mjs scripts/image.sh -type f -print0 | sort -z | xargs -0 sha256sum
} | sha256sum | cut -c1-32)
have=$(docker image inspect --format '{{ index .Config.Labels "lessl.inputs" }}' "${tags[0]}" 2>/dev/null || true)
if [ "$have" = "$inputs" ]; then
  for t in "${tags[@]:1}"; do docker tag "${tags[0]}" "$t"; done
  echo "${tags[0]}"
  exit 0
fi

ctx=$(mktemp -d "${TMPDIR:-/tmp}/lessl-image.XXXXXX")
trap 'rm -rf "$ctx"' EXIT
app="$ctx/app"
mkdir -p "$app/packages"

# phase 1: the workspace as npm sees it: the root manifest and lock, each package's manifest and build
cp package.json package-lock.json "$app/"
for dir in packages/*/; do
  p=$(basename "$dir")
  mkdir -p "$app/packages/$p"
  cp "$dir/package.json" "$app/packages/$p/"
  for part in dist bin agent node_modules; do
    [ -e "$dir/$part" ] && cp -a "$dir/$part" "$app/packages/$p/"
  done
done
rm -f "$app"/packages/*/agent/*.c "$app"/packages/*/dist/*.tsbuildinfo
find "$app/packages" -name '*.d.ts.map' -delete -o -name '*.js.map' -delete
cp -a node_modules "$app/node_modules"

# phase 2: production dependencies only, from what is installed (no registry, no install scripts)
(cd "$app" && npm prune --omit=dev --offline --ignore-scripts --no-audit --no-fund >/dev/null)

# phase 3: the workspace packages as real directories under node_modules, not links into the tree
for link in "$app"/node_modules/@lessl/*; do
  [ -L "$link" ] || continue
  target=$(readlink -f "$link")
  rm "$link"
  mv "$target" "$link"
done
rm -rf "$app/packages" "$app/node_modules/.bin" "$app/node_modules/.package-lock.json"

# phase 4: what does not run: type declarations, source maps, docs, other platforms' native builds
find "$app/node_modules" \( -name '*.d.ts' -o -name '*.d.mts' -o -name '*.d.cts' -o -name '*.map' -o -name '*.md' \) -type f -delete
rm -rf "$app/node_modules/@types"
platform=$(node -p 'process.platform + "-" + process.arch')
find "$app/node_modules" -type d -name prebuilds | while read -r pre; do
  find "$pre" -mindepth 1 -maxdepth 1 -type d ! -name "$platform" -exec rm -rf {} +
done
if find "$app" -type l -lname '/*' | grep -q .; then
  echo "image.sh: absolute links left in the build context" >&2
  exit 1
fi

cp deploy/Dockerfile deploy/healthcheck.mjs "$ctx/"
args=(--network none --build-arg "NODE_BASE=$base" --label "lessl.version=$version" --label "lessl.inputs=$inputs")
for t in "${tags[@]}"; do args+=(--tag "$t"); done
docker build --quiet "${args[@]}" "$ctx" >/dev/null
echo "${tags[0]}"
