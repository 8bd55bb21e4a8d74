#!/usr/bin/env bash
# Adds the unprivileged user the sandbox runtime's rootless image builds run as
# (settings.sandbox.build_user, default farm-build), with a subordinate uid/gid range of
# its own for the builds' user namespaces. Idempotent. Needs root and uidmap.
#   FARM_BUILD_USER      the user's name (farm-build)
#   FARM_BUILD_SUBIDS    its range, first-last (1000000-1065535: 65536 ids, above any
#                        range useradd hands out by default)
set -euo pipefail
user=${FARM_BUILD_USER:-farm-build}
range=${FARM_BUILD_SUBIDS:-1000000-1065535}
if ! id -u "$user" >/dev/null 2>&1; then
  # The executor image's uid (images/executor-sandbox) where it is free, so stores keep one owner.
  uid=(); getent passwd 10002 >/dev/null || getent group 10002 >/dev/null || uid=(--uid 10002 --user-group)
  useradd --system "${uid[@]}" --create-home --home-dir "/var/lib/$user" --shell /usr/sbin/nologin "$user"
fi
grep -q "^$user:" /etc/subuid 2>/dev/null || usermod --add-subuids "$range" "$user"
grep -q "^$user:" /etc/subgid 2>/dev/null || usermod --add-subgids "$range" "$user"
