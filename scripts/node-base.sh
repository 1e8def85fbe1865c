#!/usr/bin/env bash
# Makes a Node base image from this machine's own files, for engines that reach no registry:
# the host's `node` binary, the shared libraries it loads (ldd), /etc/passwd and /etc/group
# with root and an unprivileged user `lessl` (uid and gid 10001), and a /tmp. No shell, no
# package manager: `node` is the image's only program. Nothing is downloaded.
#
#   bash scripts/node-base.sh [TAG]      # default TAG: lessl/node-base:20
#
# The image is labelled with the node version it holds; a second run with the same node
# answers at once. DOCKER_HOST selects the engine, as for the docker CLI. Prints the tag.
set -euo pipefail

tag=${1:-lessl/node-base:20}
node_bin=$(readlink -f "$(command -v node)")
version=$("$node_bin" --version)

have=$(docker image inspect --format '{{ index .Config.Labels "lessl.node-version" }}' "$tag" 2>/dev/null || true)
if [ "$have" = "$version" ]; then
  echo "$tag"
  exit 0
fi

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
root="$ctx/rootfs"
mkdir -p "$root/usr/local/bin" "$root/etc" "$root/tmp" "$root/home/lessl"
chmod 1777 "$root/tmp"
cp "$node_bin" "$root/usr/local/bin/node"

# the libraries node loads, at the paths the loader looks for them
ldd "$node_bin" | awk '/=> \// { print $3 } /^\t\/lib/ { print $1 }' | while read -r lib; do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done

cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/usr/sbin/nologin
lessl:x:10001:10001:lessl:/home/lessl:/usr/sbin/nologin
EOF
cat >"$root/etc/group" <<'EOF'
root:x:0:
lessl:x:10001:
EOF

cat >"$ctx/Dockerfile" <<EOF
FROM scratch
COPY rootfs/ /
LABEL lessl.node-version="$version"
ENV PATH=/usr/local/bin
ENTRYPOINT ["/usr/local/bin/node"]
EOF

docker build --quiet --network none --tag "$tag" "$ctx" >/dev/null
echo "$tag"
