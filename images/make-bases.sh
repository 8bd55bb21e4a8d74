#!/usr/bin/env bash
# Makes the local base images that farm's images and tests start from, with no registry
# (none can be pulled from here), each a root file system `docker import`ed:
#   farm/busybox:latest   Debian's busybox-static and its applet links: the default step image
#   farm/debian:bookworm  a minimal Debian (debootstrap --variant=minbase) with Python 3: the
#                         BASE of images/farm, images/executor-dood and images/executor-dind;
#                         it trusts the CAs this machine added in /usr/local/share/ca-certificates
# Usage: images/make-bases.sh [busybox] [debian]   (both when none is named)
# Needs root (debootstrap), busybox-static and debootstrap; MIRROR overrides the Debian mirror.
set -euo pipefail
mirror=${MIRROR:-http://deb.debian.org/debian}
suite=bookworm
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT

busybox_base() {
  local busybox
  busybox=$(command -v busybox || true)
  if [ -z "$busybox" ] || ldd "$busybox" >/dev/null 2>&1; then
    echo "a static busybox is needed: apt-get install busybox-static" >&2
    exit 1
  fi
  local dir=$root/busybox
  mkdir -p "$dir/bin" "$dir/tmp" "$dir/etc" "$dir/workspace"
  chmod 1777 "$dir/tmp"
  cp "$busybox" "$dir/bin/busybox"
  for applet in $("$busybox" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$dir/bin/$applet"
  done
  echo 'root:x:0:0:root:/root:/bin/sh' >"$dir/etc/passwd"
  echo 'root:x:0:' >"$dir/etc/group"
  tar -C "$dir" -c . | docker import -c 'ENV PATH=/bin' -c 'CMD ["/bin/sh"]' - farm/busybox:latest >/dev/null
  echo farm/busybox:latest
}

debian_base() {
  command -v debootstrap >/dev/null || { echo "debootstrap is needed: apt-get install debootstrap" >&2; exit 1; }
  local dir=$root/debian
  echo "debootstrap $suite from $mirror (about a minute)" >&2
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates "$suite" "$dir" "$mirror" >"$root/debootstrap.log" 2>&1 \
    || { tail -30 "$root/debootstrap.log" >&2; exit 1; }
  printf 'Types: deb\nURIs: %s\nSuites: %s %s-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$mirror" "$suite" "$suite" >"$dir/etc/apt/sources.list.d/debian.sources"
  rm -f "$dir/etc/apt/sources.list"
  # Trust what this machine trusts: CAs it added locally (a proxy's, a company's) go in too.
  if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$dir/usr/local/share/ca-certificates/"
    chroot "$dir" update-ca-certificates >/dev/null
  fi
  # Smaller and reproducible: no package lists, caches or logs from the bootstrap.
  rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/var/cache/apt/archives/*.deb "$dir"/var/log/*.log "$dir"/tmp/*
  tar -C "$dir" --numeric-owner -c . | docker import \
    -c 'ENV LANG=C.UTF-8' -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' -c 'CMD ["/bin/bash"]' \
    - "farm/debian:$suite" >/dev/null
  echo "farm/debian:$suite"
}

[ $# -gt 0 ] || set -- busybox debian
for base in "$@"; do
  case $base in
    busybox) busybox_base ;;
    debian) debian_base ;;
    *) echo "unknown base $base (busybox, debian)" >&2; exit 2 ;;
  esac
done
