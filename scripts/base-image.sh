#!/usr/bin/env bash
# Makes the offline base image of the sbkit images (default tag sbkit-base:bookworm):
# `debootstrap --variant=minbase bookworm`, slimmed like debian:bookworm-slim, with
# every package any containerfile needs already installed, then `docker import`ed.
# The containerfiles build on it with no network (see containerfiles/runtime-rootfs.sh):
#
#   bash scripts/base-image.sh              # once; a no-op while the base is current
#   bash scripts/build-images.sh            # picks sbkit-base:bookworm up by itself
#
# Which packages: the union of the `ARG PACKAGES="..."` and `ARG BACKPORTS_PACKAGES="..."`
# lines of containerfiles/* (backports from bookworm-backports). Base-system packages
# are marked manual, all the others automatic, so each image keeps only its own with
# `apt-mark manual` + `apt-get autoremove`.
#
# Caching: the image carries a label org.sbkit.base.key, a hash of this script and of
# the package lists; while the engine has an image with the current key nothing is done.
# The root filesystem tarball is kept as <cache>/base-image/rootfs-<key>.tar (cache:
# $SBKIT_CACHE or .cache), so a lost image is re-imported in seconds; downloaded .debs are
# kept in <cache>/base-image/debs and .../archives for the next bootstrap. --force
# bootstraps again. The Debian mirror is the host's (from /etc/apt), never a fixed one.
#
# Needs root (debootstrap, chroot; re-runs itself with sudo) and debootstrap
# (scripts/install-deps.sh installs it).
#
# Environment: SBKIT_BASE_IMAGE (tag, default sbkit-base:bookworm), SBKIT_CACHE.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
cache=${SBKIT_CACHE:-$top/.cache}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
image=${SBKIT_BASE_IMAGE:-sbkit-base:bookworm}
suite=bookworm
work=$cache/base-image
force=0
case "${1:-}" in
  --force) force=1 ;;
  "") ;;
  *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

say() { echo "base-image: $*" >&2; }
die() { say "$*"; exit 1; }

# The union of the containerfiles' package lists.
collect() {
  sed -nE "s/^ARG $1=\"([^\"]*)\".*/\1/p" "$top"/containerfiles/* \
    | tr ' ' '\n' | sed '/^$/d' | sort -u | tr '\n' ' ' | sed 's/ $//'
}
packages=$(collect PACKAGES)
backports=$(collect BACKPORTS_PACKAGES)
[ -n "$packages" ] || die "no ARG PACKAGES=\"...\" lines in $top/containerfiles"
key=$( { cat "$here/base-image.sh"; echo "$suite|$packages|$backports"; } | sha256sum | cut -c1-16)
tarball=$work/rootfs-$key.tar

command -v docker >/dev/null || die "docker is not installed"
current=$(docker image inspect -f '{{ index .Config.Labels "org.sbkit.base.key" }}' "$image" 2>/dev/null || true)
if [ "$force" = 0 ] && [ "$current" = "$key" ]; then
  say "$image is current (key $key)"
  # Root filesystems of older keys are of no further use.
  find "$work" -maxdepth 1 -name 'rootfs-*.tar' ! -name "rootfs-$key.tar" -delete 2>/dev/null || true
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  say "debootstrap and chroot need root: running with sudo"
  exec sudo --preserve-env=SBKIT_CACHE,SBKIT_BASE_IMAGE bash "$here/base-image.sh" "$@"
fi

mkdir -p "$work"
exec 9>"$work/lock"
flock 9

rootfs=$work/rootfs
unmount_all() {
  for m in var/cache/apt/archives proc; do
    if mountpoint -q "$rootfs/$m" 2>/dev/null; then umount "$rootfs/$m" || umount -l "$rootfs/$m"; fi
  done
}
cleanup() {
  unmount_all
  # Only when nothing is mounted any more: never delete through a bind mount.
  if ! grep -qs " $rootfs/" /proc/mounts; then rm -rf "$rootfs"; fi
}

bootstrap() {
  command -v debootstrap >/dev/null || die "debootstrap is missing: run scripts/install-deps.sh (or apt-get install debootstrap)"
  # The host's Debian mirror, as scripts/install-deps.sh finds it.
  local srcs=() f uris mirror security
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] && srcs+=("$f")
  done
  uris=$( { grep -hoE '^(URIs:|deb) +[a-z]+://[^ ]+' "${srcs[@]}" 2>/dev/null || true; } | awk '{print $2}')
  mirror=$(printf '%s\n' "$uris" | grep -v -e security -e nodesource -e google | head -n1 || true)
  security=$(printf '%s\n' "$uris" | grep -e debian-security | head -n1 || true)
  [ -n "$mirror" ] || die "no Debian mirror found in /etc/apt"

  trap cleanup EXIT
  cleanup
  mkdir -p "$work/debs" "$work/archives/partial"
  local t0=$SECONDS
  say "debootstrap --variant=minbase $suite from $mirror (log: $work/debootstrap.log)"
  if ! debootstrap --variant=minbase --cache-dir="$work/debs" "$suite" "$rootfs" "$mirror" \
      >"$work/debootstrap.log" 2>&1; then
    tail -n 30 "$work/debootstrap.log" >&2
    die "debootstrap failed"
  fi
  say "debootstrap: $((SECONDS - t0)) s"

  # Slim like the official debian:*-slim images: no documentation, man pages or locales
  # (copyright files stay), no recommends, no service starts, no apt caches.
  cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
EOF
  cat >"$rootfs/etc/apt/apt.conf.d/docker-sbkit" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
EOF
  printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
  chmod 755 "$rootfs/usr/sbin/policy-rc.d"
  rm -f "$rootfs/etc/apt/sources.list"
  {
    printf 'Types: deb\nURIs: %s\nSuites: %s %s-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$mirror" "$suite" "$suite"
    if [ -n "$security" ]; then
      printf '\nTypes: deb\nURIs: %s\nSuites: %s-security\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$security" "$suite"
    fi
  } >"$rootfs/etc/apt/sources.list.d/debian.sources"
  printf 'Types: deb\nURIs: %s\nSuites: %s-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$mirror" "$suite" >"$rootfs/etc/apt/sources.list.d/backports.sources"
  cp /etc/resolv.conf "$rootfs/etc/resolv.conf"

  mount -t proc proc "$rootfs/proc"
  # The .debs apt downloads are kept on the host for the next bootstrap.
  mount --bind "$work/archives" "$rootfs/var/cache/apt/archives"
  local in=(chroot "$rootfs" env DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 PATH=/usr/sbin:/usr/bin:/sbin:/bin)
  local apt=(apt-get -y -q)
  # The base system as debootstrap made it: these stay manual.
  local minbase
  # shellcheck disable=SC2016 # dpkg-query's format, not the shell's
  minbase=$("${in[@]}" dpkg-query -W -f='${Package}\n' | sort)
  t0=$SECONDS
  say "installing $packages; from $suite-backports: ${backports:-nothing} (log: $work/apt.log)"
  # shellcheck disable=SC2086
  if ! {
    "${in[@]}" "${apt[@]}" update &&
    "${in[@]}" "${apt[@]}" dist-upgrade &&
    "${in[@]}" "${apt[@]}" install --no-install-recommends $packages &&
    if [ -n "$backports" ]; then
      "${in[@]}" "${apt[@]}" install --no-install-recommends -t "$suite-backports" $backports
    fi
  } >"$work/apt.log" 2>&1; then
    tail -n 30 "$work/apt.log" >&2
    die "installing the packages failed"
  fi
  say "packages: $((SECONDS - t0)) s"
  # Everything beyond the base system becomes automatic: an image keeps a package only
  # when it marks it manual (containerfiles/runtime-rootfs.sh).
  local extras
  # shellcheck disable=SC2016
  extras=$(comm -13 <(printf '%s\n' "$minbase") <("${in[@]}" dpkg-query -W -f='${Package}\n' | sort))
  # shellcheck disable=SC2086
  "${in[@]}" apt-mark manual $minbase >/dev/null
  # shellcheck disable=SC2086
  "${in[@]}" apt-mark auto $extras >/dev/null
  # Check: the images together must be able to keep everything they asked for.
  local left
  left=$("${in[@]}" apt-get autoremove -s -o APT::AutoRemove::RecommendsImportant=false \
    -o APT::AutoRemove::SuggestsImportant=false | awk '/^Remv /{print $2}' | wc -l)
  say "$(printf '%s\n' "$extras" | wc -l) packages beyond minbase (all automatic; $left would be autoremoved)"
  unmount_all

  # What the official images leave out; the documentation debootstrap installed before
  # the dpkg excludes were in place.
  find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$rootfs"/usr/share/{man,groff,info,lintian,linda,locale}/* \
    "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/cache/debconf/*-old \
    "$rootfs"/var/lib/dpkg/*-old "$rootfs"/var/log/* "$rootfs"/tmp/* "$rootfs"/var/tmp/* \
    "$rootfs"/etc/hostname "$rootfs"/etc/machine-id
  : >"$rootfs/etc/resolv.conf"
  # Like the official images: derived images that apt-get install keep no .debs.
  cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF

  say "writing $tarball"
  tar --numeric-owner --xattrs --xattrs-include='*' -C "$rootfs" \
    --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' \
    -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
  cleanup
  trap - EXIT
}

t_start=$SECONDS
if [ "$force" = 1 ] || [ ! -f "$tarball" ]; then
  bootstrap
else
  say "using the cached root filesystem $tarball"
fi

say "docker import $(du -m "$tarball" | cut -f1) MiB as $image"
docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["/bin/bash"]' \
  --change "LABEL org.sbkit.base.key=\"$key\"" \
  --change "LABEL org.sbkit.base.packages=\"$packages\"" \
  --change "LABEL org.sbkit.base.backports=\"$backports\"" \
  --message "scripts/base-image.sh: debootstrap --variant=minbase $suite + sbkit packages" \
  "$tarball" "$image" >/dev/null
# Older root filesystems are of no further use.
find "$work" -maxdepth 1 -name 'rootfs-*.tar' ! -name "rootfs-$key.tar" -delete
say "$image ready (key $key, $(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%d MB", $1/1000000}'), $((SECONDS - t_start)) s)"
