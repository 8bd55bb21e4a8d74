#!/bin/sh
# Starts the private dockerd. Without `privileged` (farm grants capabilities instead, see
# agents/runtimes/dind.py), Docker mounts the container's own cgroups read-only; the inner
# daemon must create cgroups for its containers below them, so each is remounted writable
# (needs CAP_SYS_ADMIN, which it has). They stay the outer container's cgroups: its limits
# hold for everything the inner daemon runs.
set -eu
grep ' /sys/fs/cgroup/' /proc/self/mounts | while read -r _ dir _ opts _; do
  case ",$opts," in *,ro,*) mount -o remount,bind,rw "$dir" ;; esac
done
mkdir -p /run/dind
exec "$@"
