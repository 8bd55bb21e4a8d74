"""The escape suite's attacks: each a small record (a name, what it tries, the jobs that try
it, and a judge), run against every runtime by tests/security/test_escapes.py.

A judge looks at what the jobs left on the node (host-side evidence: a planted secret in
the job's log or in its stored artifacts, a file appearing outside, a process of the job
running as the node's root, what the job holds on the node's disks) and says `contained`, `not contained`, or `error`
when the attack could not be tried as written (the step or build never ran): an error is
never read as contained. `n/a`: the attack does not apply to the runtime (an image build on
`local`, which builds none; `give`, which `local` never does).

Attacks that only read what their jobs printed share jobs (a *batch*): one probe job reads,
connects and tries privileges for thirteen attacks; each judge looks only at its own lines.

Rows are judged on the route they name. An escape to the node's root (`host-root`) reaches
everything, but the other rows say what a step reaches without one.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from farm.models import ErrorCode, JobState

if TYPE_CHECKING:
    from tests.security.harness import Seen

RUNTIMES = ("local", "docker", "dind", "sandbox")
BUILDERS = ("docker", "dind", "sandbox")  # the runtimes that build images
GIVEN = ("docker", "dind", "sandbox")  # the runtimes whose steps farm (root) hands the workspace to (`give`)
IDENTITY_MAP = "0 0 4294967295"  # /proc/<pid>/uid_map of the node's own user namespace
CAP_SYS_MODULE = 16
MiB = 1024 * 1024
PIDS_LIMIT = 256  # the suite's executors.pids_limit and docker.pids_limit
# Under runsc the pids limit counts gVisor's own threads, whose number grows with the load of
# the machine: at 256 a probe job's sandbox died of it in a CI run (exit 2 before its first
# line). The sandbox gets more room; its guest processes are held to the same bound.
SANDBOX_PIDS_LIMIT = 1024


def pids_limit(runtime: str) -> int:
    return SANDBOX_PIDS_LIMIT if runtime == "sandbox" else PIDS_LIMIT
MEMORY = "128m"  # the suite's docker.memory
DISK_QUOTA = 64 * MiB  # the suite's executors.disk_quota_bytes


@dataclass(frozen=True)
class Verdict:
    outcome: str  # "contained" | "not contained" | "n/a" | "error"
    detail: str

    @classmethod
    def escaped(cls, detail: str) -> Verdict:
        return cls("not contained", detail)

    @classmethod
    def held(cls, detail: str) -> Verdict:
        return cls("contained", detail)

    @classmethod
    def error(cls, detail: str) -> Verdict:
        return cls("error", detail)


@dataclass(frozen=True)
class JobPlan:
    """One job of an attack. Text fields are templates: {nonce}, {image}, {data}."""

    calls: str  # escape.sh functions the step runs (tests/security/scripts.py)
    tenant: str = "mallory"
    tier: str = "unprotected"
    caches: tuple[tuple[str, str], ...] = ()  # (key template, path): saved always, restored by key
    artifacts: tuple[str, ...] = ()
    source: bool = False  # check out the suite's repository of links (tests/security/harness.py)
    dockerfile: str | None = None  # an image job: built from the workspace after the step
    timeout_s: int = 120


@dataclass(frozen=True)
class Batch:
    name: str
    jobs: tuple[JobPlan, ...]
    # Host-side watchers during the jobs and checks after them (tests/security/harness.py):
    # "marks" (processes of ESC_ROOT_MARK*), "bomb", "disk", "followup", "leftover".
    watch: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Attack:
    name: str
    title: str  # the README row
    batch: Batch
    judge: Callable[[Seen], Verdict]
    runtimes: tuple[str, ...] = RUNTIMES  # where it applies; n/a elsewhere


# -- judges' helpers --------------------------------------------------------------------------


def lines(text: str, prefix: str) -> list[str]:
    """Lines holding `prefix` (a route tag like "[daemon] " may come before it)."""
    return [ln for ln in text.splitlines() if prefix in ln]


def route(line: str) -> str:
    return "through a container on the step's daemon" if line.startswith("[daemon]") else "directly"


def ran(seen: Seen, sentinel: str, job: int = 0) -> Verdict | None:
    """An error verdict when the job's step (or RUN) did not get as far as `sentinel`."""
    r = seen.runs[job]
    if sentinel not in r.log:
        tail = r.log[-600:].replace("\n", " | ")
        return Verdict.error(f"the attack did not run (no {sentinel!r}); job {r.job.state.value}/{r.job.error}: {tail}")
    if "ESCAPE-ERROR" in r.log:
        return Verdict.error(lines(r.log, "ESCAPE-ERROR")[0])
    return None


def node_fields(line: str) -> dict[str, str]:
    """boot_id, uid_map, capeff (and rc, out) from a line escape.sh's `node` wrote."""
    found = dict(re.findall(r"\b(boot_id|capeff|rc)=(\S*)", line))
    m = re.search(r"uid_map=(.*?) capeff=", line)
    found["uid_map"] = m.group(1).strip() if m else ""
    found["out"] = line.split(" out=", 1)[1] if " out=" in line else ""
    return found


def on_node_as_root(seen: Seen, f: dict[str, str]) -> bool:
    """Whether a line's process ran on the node's kernel, in its own user namespace."""
    return f.get("boot_id") == seen.host.boot_id and f.get("uid_map") == IDENTITY_MAP


# -- the probe: reads, loopback, privileges ---------------------------------------------------

PROBE = Batch("probe", (JobPlan("reads net priv"),), frozenset({"marks"}))


def secret_judge(key: str, prefix: str) -> Callable[[Seen], Verdict]:
    def judge(seen: Seen) -> Verdict:
        if err := ran(seen, "== reads"):
            return err
        secret = seen.host.secrets[key]
        hits = [ln.split(":", 1)[0] for ln in lines(seen.runs[0].log, prefix) if secret in ln]
        if hits:
            return Verdict.escaped(f"the step printed it ({', '.join(sorted(set(hits)))})")
        return Verdict.held("not in the job's log")

    return judge


def reach_judge(name: str, pattern: str) -> Callable[[Seen], Verdict]:
    def judge(seen: Seen) -> Verdict:
        if err := ran(seen, "== net"):
            return err
        hits = [ln for ln in lines(seen.runs[0].log, f"{name}: ") if re.search(pattern, ln)]
        if hits:
            return Verdict.escaped(f"it answered {route(hits[0])}: {hits[0][:120]!r}")
        return Verdict.held("no answer from it in the job's log")

    return judge


def judge_socket(seen: Seen) -> Verdict:
    if err := ran(seen, "== priv"):
        return err
    found = lines(seen.runs[0].log, "socket ")
    if seen.host.docker_id and any(f"daemon-id={seen.host.docker_id}" in ln for ln in found):
        return Verdict.escaped("the host daemon answered: " + "; ".join(found))
    return Verdict.held("; ".join(found) or "no socket in reach")


def judge_mount(seen: Seen, job: int = 0, sentinel: str = "== priv") -> Verdict:
    if err := ran(seen, sentinel, job):
        return err
    hits = [ln for ln in lines(seen.runs[job].log, "mount-ok") if on_node_as_root(seen, node_fields(ln))]
    if hits:
        return Verdict.escaped(f"mounted a tmpfs as the node's root {route(hits[0])}")
    tried = lines(seen.runs[job].log, "mount-")
    return Verdict.held(f"{len(tried)} tries, none as the node's root: " + "; ".join(t[:100] for t in tried))


def judge_module(seen: Seen) -> Verdict:
    """Loaded, or the kernel let it past the privilege check (CAP_SYS_MODULE on the node's own
    kernel and user namespace, no seccomp refusal): a kernel without modules (this one) fails
    every load, but not for want of privilege."""
    if err := ran(seen, "== priv"):
        return err
    for ln in lines(seen.runs[0].log, "insmod rc="):
        f = node_fields(ln)
        capable = bool(int(f.get("capeff") or "0", 16) >> CAP_SYS_MODULE & 1)
        if f.get("rc") == "0" or (capable and on_node_as_root(seen, f) and "not permitted" not in f["out"]):
            return Verdict.escaped(f"{route(ln)}: CAP_SYS_MODULE on the node's kernel, insmod said {f['out']!r}")
    return Verdict.held("; ".join(node_fields(ln)["out"][:80] for ln in lines(seen.runs[0].log, "insmod rc=")))


def judge_host_root(seen: Seen, job: int = 0, sentinel: str = "== priv") -> Verdict:
    """A process of the job seen on the node running as its root (uid 0 in the node's own user
    namespace), or a command it made the node run (cgroup release_agent)."""
    if err := ran(seen, sentinel, job):
        return err
    proof = seen.host.data / f"host-command-{seen.nonce}"
    if proof.exists():
        return Verdict.escaped(f"the node ran its command as root: {proof.read_text().strip()}")
    procs = list(seen.watched.get("marks", {}).values())
    roots = [p for p in procs if p["uid"] == 0 and p["uid_map"] == IDENTITY_MAP]
    if roots:
        return Verdict.escaped(f"its process {roots[0]['cmdline']!r} ran as the node's root (capabilities {roots[0]['capeff']})")
    return Verdict.held(f"its processes seen on the node (uid, uid_map): {[(p['uid'], p['uid_map']) for p in procs] or 'none'}")


def judge_write_outside(seen: Seen) -> Verdict:
    if err := ran(seen, "== priv"):
        return err
    made = [p for p in (seen.host.data / f"outside-{seen.nonce}", seen.wsroot / f"outside-{seen.nonce}") if p.exists()]
    if made:
        return Verdict.escaped("wrote " + ", ".join(str(p.relative_to(seen.host.data)) for p in made) + " (in the data dir)")
    return Verdict.held("nothing appeared in the data dir or the executor's workspace root")


# -- what farm does as root with the workspace after the step ---------------------------------

LINKS = Batch("links", (JobPlan("links", source=True, artifacts=("out/*", "out/dir/*")),))


def judge_artifact_link(seen: Seen) -> Verdict:
    if err := ran(seen, "links: "):
        return err
    got = [name for name, data in seen.runs[0].artifacts.items() if seen.host.secrets["planted"].encode() in data]
    if got:
        return Verdict.escaped(f"the planted file was stored as artifact(s) {got}")
    return Verdict.held(f"stored: {sorted(seen.runs[0].artifacts)}")


def judge_remove_link(seen: Seen) -> Verdict:
    if err := ran(seen, "links: "):
        return err
    keep = seen.host.data / "victim" / "keep"
    if not keep.exists() or keep.read_text() != seen.host.victim_text:
        return Verdict.escaped(f"{keep.relative_to(seen.host.data)} outside the workspace was removed or changed")
    return Verdict.held("what the links pointed at is intact")


def judge_chown_link(seen: Seen) -> Verdict:
    r = seen.runs[0]
    if r.job.error is ErrorCode.SOURCE_FAILED or "chown-abs" not in r.log:
        return Verdict.error(f"the checkout of the repository of links did not happen: {r.job.error}")
    changed = [f"{p.name} {p.stat().st_uid}:{p.stat().st_gid}" for p in (seen.host.data / "victim", seen.host.data / "victim" / "chown-me")
               if (p.stat().st_uid, p.stat().st_gid) != (0, 0)]  # fmt: skip
    if changed:
        return Verdict.escaped(f"farm gave the steps' user what the checkout's links point at: {changed}")
    return Verdict.held("what the links pointed at still belongs to root")


CACHE_LINKS = Batch("cache-links", (
    JobPlan("cache_links", caches=(("link-abs-{nonce}", "c-abs"), ("link-rel-{nonce}", "c-rel"),
                                   ("link-hard-{nonce}", "c-hard"), ("link-dir-{nonce}", "c-dir/planted"))),
    JobPlan("cache_read", caches=(("link-abs-{nonce}", "c-abs"), ("link-rel-{nonce}", "c-rel"),
                                  ("link-hard-{nonce}", "c-hard"), ("link-dir-{nonce}", "c-dir/planted"))),
))  # fmt: skip


def judge_cache_link(seen: Seen) -> Verdict:
    if err := ran(seen, "escape.sh: cache_links"):
        return err
    if seen.runs[1].job.state is not JobState.SUCCEEDED:
        return Verdict.error(f"the restoring job ended {seen.runs[1].job.state.value}: {seen.runs[1].log[-300:]}")
    hits = [ln for ln in lines(seen.runs[1].log, "restored ") if seen.host.secrets["planted"] in ln]
    if hits:
        return Verdict.escaped(f"a later job restored the planted file: {hits[0].split(':')[0]}")
    saves = [c.save for c in seen.runs[0].job.caches]
    return Verdict.held(f"saves: {saves}; nothing of it restored")


RACE = Batch("race", (JobPlan("race", artifacts=("real-a.big", "real-*/f")),))
# Into the Valkey's directory (its password is an artifact there), then into a directory with a
# filesystem mounted in it (by the suite: Host.bait).
SWAP = Batch("swap", (JobPlan("swap=redis", artifacts=("password",)), JobPlan("swap=bait")), frozenset({"bait"}))


def artifact_judge(sentinel: str) -> Callable[[Seen], Verdict]:
    def judge(seen: Seen) -> Verdict:
        if err := ran(seen, sentinel):
            return err
        secrets = {k: v.encode() for k, v in seen.host.secrets.items()}
        got = sorted({f"{name} ({k})" for name, data in seen.runs[0].artifacts.items() for k, v in secrets.items() if v in data})
        if got:
            return Verdict.escaped(f"farm stored farm's files as the job's artifacts: {got}")
        return Verdict.held(f"stored: {sorted(seen.runs[0].artifacts)}")

    return judge


def judge_unmount(seen: Seen) -> Verdict:
    if err := ran(seen, "swap: set", 1):
        return err
    if not os.path.ismount(seen.host.bait):
        return Verdict.escaped(f"farm unmounted {seen.host.bait.relative_to(seen.host.data)}, a filesystem outside the "
                               "workspace, as it removed the job's workspace")  # fmt: skip
    return Verdict.held("the filesystem the link led to is still mounted")


# -- resources ----------------------------------------------------------------------------------

BOMB = Batch("bomb", (JobPlan("fork_bomb", timeout_s=30),), frozenset({"bomb", "followup"}))
HOG = Batch("hog", (JobPlan("memory_hog", timeout_s=60),), frozenset({"followup"}))
FILL = Batch("fill", (JobPlan("disk_fill", timeout_s=90),), frozenset({"disk", "followup"}))


def judge_bomb(seen: Seen) -> Verdict:
    """The node keeps starting processes, the bomb's stay under the limit (counted on the node;
    in gVisor, as the step counted its own), nothing of it is left, and the next job runs. Under
    gVisor a bomb may end the whole sandbox, its output with it: the node's side still counts."""
    if err := ran(seen, "escape.sh: fork_bomb"):
        return err
    w = seen.watched["bomb"]
    guest = [int(n) for n in re.findall(r"procs=(\d+) boot_id=(?!" + re.escape(seen.host.boot_id) + r")", seen.runs[0].log)]
    detail = (f"at most {w['peak']} of its processes on the node, {max(guest, default=0)} in its own kernel; "
              f"{w['spawn_failures']} failed spawns on the node; {len(w['left'])} left after")  # fmt: skip
    follow = seen.watched["followup"]
    limit = pids_limit(seen.runtime)
    if (w["spawn_failures"] or w["peak"] > limit + 64 or max(guest, default=0) > limit + 64 or w["left"]
            or not follow["ok"]):  # fmt: skip
        return Verdict.escaped(f"{detail}; next job: {follow['detail']}")
    return Verdict.held(detail)


def judge_hog(seen: Seen) -> Verdict:
    """The 256 MiB line passed through `tail` whole (it held all of it at once), or not: killed
    at the steps' memory limit. Either way the node must run the next job."""
    if err := ran(seen, "escape.sh: memory_hog"):
        return err
    r = seen.runs[0]
    got = re.findall(r"hog got=(\d+) of (\d+)", r.log)
    follow = seen.watched["followup"]
    if not follow["ok"]:
        return Verdict.escaped(f"the node did not run the next job: {follow['detail']}")
    if got and got[-1][0] == got[-1][1]:
        return Verdict.escaped(f"it held {int(got[-1][0]) // MiB} MiB (the steps' limit: {MEMORY})")
    held = f"{int(got[-1][0]) // MiB} MiB got through" if got else "killed before it could say"
    return Verdict.held(f"stopped short: {held} (job {r.job.state.value}, exit {r.job.exit_code}); the next job ran")


def judge_fill(seen: Seen) -> Verdict:
    """Contained: the job fails, held at most its quota on the node's disks while it ran
    (workspace, container layers, anything outside), and left nothing after."""
    if err := ran(seen, "fill-workspace: rc="):
        return err
    r, d = seen.runs[0], seen.watched["disk"]
    where = ", ".join(f"{k} {v // MiB} MiB" for k, v in d["where"].items())
    detail = (f"job {r.job.state.value}/{r.job.error}; at its peak it held {d['peak'] // MiB} MiB ({where}); "
              f"left after: {d['left'] or 'nothing'}; quota {DISK_QUOTA // MiB} MiB {seen.quota_note}")  # fmt: skip
    if r.job.state is not JobState.FAILED or d["peak"] > DISK_QUOTA + 32 * MiB or d["left"]:
        return Verdict.escaped(detail)
    return Verdict.held(detail)


# -- poisoning what the next tenant uses ------------------------------------------------------

POISON = Batch("poison", (
    JobPlan("cache_seed", tenant="victim", tier="protected", caches=(("dt-{nonce}", "dt"), ("dr-{nonce}", "dr"))),
    JobPlan("cache_show", tenant="victim", tier="protected", caches=(("dt-{nonce}", "dt"), ("dr-{nonce}", "dr"))),
    JobPlan("poison_t", tenant="mallory", tier="unprotected", caches=(("dt-{nonce}", "dt"),)),
    JobPlan("poison_r", tenant="victim", tier="unprotected", caches=(("dr-{nonce}", "dr"),)),
    JobPlan("cache_show", tenant="victim", tier="protected", caches=(("dt-{nonce}", "dt"), ("dr-{nonce}", "dr"))),
))  # fmt: skip


def poison_judge(what: str, clean: str) -> Callable[[Seen], Verdict]:
    def judge(seen: Seen) -> Verdict:
        if f"restored: {clean}" not in seen.runs[1].log:
            return Verdict.error(f"the victim's own entry did not restore: {seen.runs[1].log[-400:]}")
        poison = f"POISON-{what}-{seen.nonce}"
        if poison in seen.runs[4].log:
            how = "tampered with the node's copy" if "tampered" in seen.runs[2 if what == "T" else 3].log else "an entry"
            return Verdict.escaped(f"the victim's protected job restored the poison ({how})")
        if f"restored: {clean}" not in seen.runs[4].log:
            return Verdict.error(f"the victim's last restore did not show its entry: {seen.runs[4].log[-400:]}")
        return Verdict.held("the victim restored its own entry")

    return judge


LEFTOVER = Batch("leftover", (JobPlan("leave"), JobPlan("look", tenant="victim")), frozenset({"leftover"}))


def judge_leftover(seen: Seen) -> Verdict:
    if err := ran(seen, "look: done", 1) or ran(seen, "leave: done", 0):
        return err
    found = lines(seen.runs[1].log, "seen-")
    alive = seen.watched["leftover"]
    if found or alive:
        return Verdict.escaped(f"the next job saw {[f.split(':')[0] for f in found]}; alive on the node: {alive}")
    return Verdict.held("the next job saw nothing of it")


# -- image builds -------------------------------------------------------------------------------

ARGS = "".join(f"ARG {a}\n" for a in ("ESC_DATA", "ESC_WSROOT", "ESC_NONCE", "ESC_VALKEY_PORT", "ESC_API_PORT", "ESC_RAY_PORT",
                                      "ESC_ROOT_MARK", "ESC_PLANTED_SIZE"))  # fmt: skip
BUILD_PROBE = Batch("build-probe", (JobPlan(
    "", dockerfile="FROM {image}\n" + ARGS + "COPY escape.sh /escape.sh\nRUN busybox sh /escape.sh build_probe # {nonce}\n",
),), frozenset({"marks"}))  # fmt: skip
BUILD_LINK = Batch("build-link", (JobPlan(
    "links", dockerfile="FROM {image}\nCOPY . /ctx/\n"
    "RUN echo context-run-{nonce}; for f in /ctx/out/*; do cat $f 2>&1 | sed \"s|^|context $f: |\"; done\n",
),))  # fmt: skip
_X = "RUN echo layer-x-{nonce} && cat /proc/sys/kernel/random/uuid > /layer-x\n"
_R = "RUN echo layer-r-{nonce} && cat /proc/sys/kernel/random/uuid > /layer-r\n"
LAYERS = Batch("layers", (
    JobPlan("", tenant="mallory", dockerfile="FROM {image}\n" + _X + 'RUN echo "seen x=$(cat /layer-x) {nonce}-a"\n'),
    JobPlan("", tenant="victim", dockerfile="FROM {image}\n" + _R + 'RUN echo "seen r=$(cat /layer-r) {nonce}-b"\n'),
    JobPlan("", tenant="victim", tier="protected", dockerfile=(
        "FROM {image} AS x\n" + _X + "FROM {image} AS r\n" + _R + "FROM {image}\n"
        "COPY --from=x /layer-x /layer-x\nCOPY --from=r /layer-r /layer-r\n"
        'RUN echo "seen x=$(cat /layer-x) r=$(cat /layer-r) {nonce}-c"\n')),
))  # fmt: skip


def build_ran(seen: Seen, job: int, sentinel: str) -> Verdict | None:
    r = seen.runs[job]
    if sentinel not in r.log:
        notes = " | ".join(ln for ln in r.log.splitlines() if ln.startswith("farm:") or "rror" in ln)[-700:]
        return Verdict.error(f"the build's RUN did not run (job {r.job.state.value}/{r.job.error}): {notes}")
    return None


def build_secret_judge(seen: Seen) -> Verdict:
    if err := build_ran(seen, 0, "== build"):
        return err
    got = sorted(k for k, v in seen.host.secrets.items() if v in seen.runs[0].log)
    return Verdict.escaped(f"RUN read {got}") if got else Verdict.held("RUN read none of farm's secrets")


def build_net_judge(seen: Seen) -> Verdict:
    if err := build_ran(seen, 0, "== build"):
        return err
    log = seen.runs[0].log
    got = [name for name, pattern in NET.items() if any(re.search(pattern, ln) for ln in lines(log, f"{name}: "))]
    return Verdict.escaped(f"RUN reached {got}") if got else Verdict.held("RUN reached none of them")


def build_link_judge(seen: Seen) -> Verdict:
    if err := build_ran(seen, 0, "context-run-"):
        return err
    hits = [ln.split(":")[0] for ln in lines(seen.runs[0].log, "context ") if seen.host.secrets["planted"] in ln]
    return Verdict.escaped(f"the build read it through {hits}") if hits else Verdict.held("the build saw no planted file")


def layer_judge(poisoner: int, stage: str) -> Callable[[Seen], Verdict]:
    def judge(seen: Seen) -> Verdict:
        made = re.findall(rf"seen {stage}=(\S+) ", seen.runs[poisoner].log)
        used = re.findall(r"seen x=(\S+) r=(\S+) ", seen.runs[2].log)
        if not made or not used:
            r = seen.runs[poisoner if not made else 2]
            return Verdict.error(f"a build did not print its layer (job {r.job.state.value}/{r.job.error}): {r.log[-500:]}")
        theirs = used[-1][0 if stage == "x" else 1]
        if theirs == made[-1]:
            return Verdict.escaped(f"the victim's image holds the layer the other job built ({theirs})")
        return Verdict.held("the victim's build made its own layer")

    return judge


# -- the list -----------------------------------------------------------------------------------

NET = {
    "valkey": r"NOAUTH|\+PONG",
    "api": r'HTTP/1\.1 200|"status":"ok"',
    "ray": r"ray:\s+(?:[0-9a-f]{2} ){3}04 00 00 00 00 00",  # an HTTP/2 SETTINGS frame: gRPC answered
}

# fmt: off
ATTACKS: list[Attack] = [
    Attack("data-dir", "read a file planted in farm's data dir", PROBE, secret_judge("planted", "data-dir: ")),
    Attack("admin-token", "read the admin token file", PROBE, secret_judge("admin-token", "admin-token: ")),
    Attack("valkey-password", "read the embedded Valkey's password (its file, or its command line)", PROBE,
           secret_judge("valkey-password", "valkey-password")),
    Attack("environ", "read a secret from another process's environment (/proc/PID/environ)", PROBE,
           secret_judge("environ", "environ: ")),
    Attack("ptrace", "read another process's memory (/proc/PID/mem)", PROBE, secret_judge("ptrace", "ptrace: ")),
    Attack("valkey", "connect to Valkey on 127.0.0.1", PROBE, reach_judge("valkey", NET["valkey"])),
    Attack("api", "connect to the API on 127.0.0.1", PROBE, reach_judge("api", NET["api"])),
    Attack("ray", "connect to Ray's GCS on 127.0.0.1", PROBE, reach_judge("ray", NET["ray"])),
    Attack("docker-socket", "talk to the host's Docker daemon", PROBE, judge_socket),
    Attack("mount", "mount a filesystem as the node's root", PROBE, judge_mount),
    Attack("kernel-module", "load a kernel module (hold CAP_SYS_MODULE over the node's kernel)", PROBE, judge_module),
    Attack("host-root", "run a process as the node's root, or make the node run a command", PROBE, judge_host_root),
    Attack("write-outside", "write into the data dir or the executor's workspace root", PROBE, judge_write_outside),
    Attack("artifact-link", "exfiltrate a host file as an artifact through a symlink or hard link", LINKS,
           judge_artifact_link),
    Attack("remove-link", "make farm's workspace removal delete outside through a link", LINKS, judge_remove_link),
    Attack("chown-link", "make farm chown outside through a link in the checkout (`give`)", LINKS, judge_chown_link,
           runtimes=GIVEN),
    Attack("cache-link", "exfiltrate a host file through a cache save (symlink, hard link, linked parent)", CACHE_LINKS,
           judge_cache_link),
    Attack("race-link", "swap a file for a link while farm collects artifacts (a process outliving the step)", RACE,
           artifact_judge("race: set")),
    Attack("workspace-swap", "replace the workspace with a link into the data dir before artifacts are collected", SWAP,
           artifact_judge("swap: set")),
    Attack("unmount-link", "make farm unmount a filesystem outside the workspace through a link (removal)", SWAP,
           judge_unmount),
    Attack("fork-bomb", "fork bomb: the pids limit holds, the node runs processes during and after", BOMB, judge_bomb),
    Attack("memory-hog", f"hold 256 MiB (steps' memory: {MEMORY}); the node runs the next job", HOG, judge_hog),
    Attack("disk-fill", "write 160 MiB in the workspace and 160 MiB outside it (quota 64 MiB)", FILL, judge_fill),
    Attack("cache-poison-tenant", "another tenant's cache save (or tampering) reaches the victim's restore", POISON,
           poison_judge("T", "clean-t")),
    Attack("cache-poison-tier", "the same tenant's unprotected job reaches its protected restore", POISON,
           poison_judge("R", "clean-r")),
    Attack("leftover", "leave a file, process, container or image for the next job on the executor", LEFTOVER,
           judge_leftover),
    Attack("build-read", "an image build's RUN reads farm's secrets (data dir, token, password, environ, memory)",
           BUILD_PROBE, build_secret_judge, runtimes=BUILDERS),
    Attack("build-loopback", "an image build's RUN connects to Valkey, the API or Ray", BUILD_PROBE, build_net_judge,
           runtimes=BUILDERS),
    Attack("build-mount", "an image build's RUN mounts a filesystem as the node's root", BUILD_PROBE,
           lambda seen: judge_mount(seen, 0, "== build"), runtimes=BUILDERS),
    Attack("build-host-root", "an image build's RUN runs as the node's root", BUILD_PROBE,
           lambda seen: judge_host_root(seen, 0, "== build"), runtimes=BUILDERS),
    Attack("build-context-link", "an image build reads a host file through a link in its context", BUILD_LINK,
           build_link_judge, runtimes=BUILDERS),
    Attack("layer-poison-tenant", "another tenant's identical RUN layer is reused by the victim's build", LAYERS,
           layer_judge(0, "x"), runtimes=BUILDERS),
    Attack("layer-poison-tier", "the same tenant's unprotected RUN layer is reused by its protected build", LAYERS,
           layer_judge(1, "r"), runtimes=BUILDERS),
]
# fmt: on

BY_NAME = {a.name: a for a in ATTACKS}
assert len(BY_NAME) == len(ATTACKS), "attack names must be unique"
