#!/bin/sh
# Runs in the `rootfs` stage of every containerfile: turns the base image into the
# root filesystem of one tool image, holding the base system plus exactly the
# packages named here (and their dependencies), nothing else.
#
#   runtime-rootfs.sh "PACKAGES" "BACKPORTS_PACKAGES"
#
# Two kinds of base:
# - sbkit-base:bookworm (scripts/base-image.sh): every package of every image is
#   already installed, the base system marked manual, the rest marked automatic.
#   Nothing is downloaded: this image's packages are marked manual and everything
#   else is autoremoved. The build runs with --network none.
# - debian:bookworm-slim (users with a registry): the packages are missing and are
#   installed from the image's own Debian mirror (bookworm-backports added for
#   BACKPORTS_PACKAGES). Needs network.
#
# The containerfile then copies the resulting tree into an empty image
# (`FROM scratch` + `COPY --from=rootfs / /`), so what autoremove deleted does not
# stay behind in the fat base's layer.
# shellcheck disable=SC2086 # the package lists are split into words on purpose
set -eu
packages=$1
backports=$2
export DEBIAN_FRONTEND=noninteractive

installed() { dpkg-query -W -f='${Status}\n' "$1" 2>/dev/null | grep -q 'install ok installed'; }

missing=""
for p in $packages $backports; do
  installed "$p" || missing="$missing $p"
done

if [ -n "$missing" ]; then
  echo "runtime-rootfs: not in the base image:$missing; installing from the network" >&2
  if [ -n "$backports" ] && ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    # The image's own mirror (debian.sources of the official images).
    mirror=$(grep -hoE '^URIs: *[a-z]+://[^ ]+' /etc/apt/sources.list.d/*.sources 2>/dev/null \
      | awk '{print $2}' | grep -v security | head -n1 || true)
    [ -n "$mirror" ] || mirror=$(grep -hoE '^deb +[a-z]+://[^ ]+' /etc/apt/sources.list 2>/dev/null \
      | awk '{print $2}' | grep -v security | head -n1 || true)
    [ -n "$mirror" ] || { echo "runtime-rootfs: no Debian mirror in the base image's apt sources" >&2; exit 1; }
    printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "$mirror" >/etc/apt/sources.list.d/backports.sources
  fi
  if ! apt-get update -qq --error-on=any; then
    echo "runtime-rootfs: cannot reach a Debian mirror to install$missing." >&2
    echo "runtime-rootfs: offline, build on the base of scripts/base-image.sh (BASE=sbkit-base:bookworm), and" >&2
    echo "runtime-rootfs: run that script again after changing a containerfile's package lists." >&2
    exit 1
  fi
  [ -z "$packages" ] || apt-get install -y -qq --no-install-recommends $packages
  [ -z "$backports" ] || apt-get install -y -qq --no-install-recommends -t bookworm-backports $backports
fi

# Keep the base system (manual), this image's packages and what they depend on.
# Recommends and Suggests do not keep anything: the images are installed without them.
[ -z "$packages$backports" ] || apt-mark manual $packages $backports >/dev/null
apt-get autoremove --purge -y -qq \
  -o APT::AutoRemove::RecommendsImportant=false \
  -o APT::AutoRemove::SuggestsImportant=false >/dev/null

for p in $packages $backports; do
  installed "$p" || { echo "runtime-rootfs: $p is not installed after autoremove" >&2; exit 1; }
done

# Runtime only: no package indexes, caches or logs.
rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/cache/debconf/*-old /var/lib/dpkg/*-old \
  /var/log/apt /var/log/dpkg.log /var/log/alternatives.log /tmp/* /var/tmp/*
# The tools run as any user (docker run --user "$(id -u):$(id -g)"): a working
# directory and a HOME that every user can write, like /tmp.
mkdir -p /work /home/sbkit
chmod 1777 /work /home/sbkit
rm -f "$0"
echo "runtime-rootfs: $(dpkg-query -W -f='${Package}\n' | wc -l) packages," \
  "$(du -sxm / 2>/dev/null | cut -f1) MiB" >&2
