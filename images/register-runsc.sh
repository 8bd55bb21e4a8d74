#!/usr/bin/env bash
# Registers gVisor's runsc with dockerd, as the sandbox runtime expects (settings.sandbox):
#   runsc        steps with no network at all (gVisor's own loopback only)
#   runsc-host   steps of tenants allowed `network: host`
# Merges into the daemon's config (DOCKER_CONFIG_FILE, default /etc/docker/daemon.json),
# keeping what is there, and makes a running dockerd reload it (SIGHUP reloads runtimes).
# Needs root and runsc (Debian's package `runsc`).
set -euo pipefail
config=${DOCKER_CONFIG_FILE:-/etc/docker/daemon.json}
runsc=$(command -v runsc) || { echo "runsc is needed: apt-get install runsc" >&2; exit 1; }
mkdir -p "$(dirname "$config")"
changed=$(python3 - "$config" "$runsc" <<'PY'
import json, os, sys
path, runsc = sys.argv[1], sys.argv[2]
config = json.load(open(path)) if os.path.exists(path) and os.path.getsize(path) else {}
want = {"runsc": {"path": runsc, "runtimeArgs": ["--network=none"]},
        "runsc-host": {"path": runsc, "runtimeArgs": ["--network=host"]}}
runtimes = config.setdefault("runtimes", {})
if all(runtimes.get(k) == v for k, v in want.items()):
    print("no")
else:
    runtimes.update(want)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(config, f, indent=2)
    os.replace(tmp, path)
    print("yes")
PY
)
if [ "$changed" = yes ] && pid=$(pidof dockerd); then
  kill -HUP $pid
  sleep 1
fi
