#!/usr/bin/env bash
# Makes the local base image `farm/busybox:latest` (the docker runtime's default step image)
# from Debian's busybox-static, with no registry: a rootfs of one static binary and its
# applet links, `docker import`ed. Usage: images/make-busybox-base.sh [TAG]
set -euo pipefail
tag=${1:-farm/busybox:latest}
busybox=$(command -v busybox || true)
if [ -z "$busybox" ] || ldd "$busybox" >/dev/null 2>&1; then
  echo "a static busybox is needed: apt-get install busybox-static" >&2
  exit 1
fi
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/tmp" "$root/etc" "$root/workspace"
chmod 1777 "$root/tmp"
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done
echo 'root:x:0:0:root:/root:/bin/sh' > "$root/etc/passwd"
echo 'root:x:0:' > "$root/etc/group"
tar -C "$root" -c . | docker import -c 'ENV PATH=/bin' -c 'CMD ["/bin/sh"]' - "$tag" >/dev/null
echo "$tag"
