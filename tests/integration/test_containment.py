"""Attempts contained by the kernel (cgroups), on this machine's real cgroup hierarchy: steps
leave nothing behind however they detach, a fenced attempt starts nothing more, and the
node's warden kills what no live attempt owns."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from agents.containment import Cgroups, Containment, Fenced
from agents.warden import Warden
from farm.models import JobSpec, JobState
from tests.conftest import require, wait_for


def _alive(marker: str) -> list[int]:
    """Pids of `sleep <marker>` processes (a unique duration)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv[:2] == [b"sleep", marker.encode()]:
                found.append(int(entry.name))
    return found


@pytest.fixture
def containment(tmp_path: Path) -> Containment:
    instance = "t" + uuid.uuid4().hex[:8]
    cgroups = Cgroups.detect(instance, pids=True)
    require("cgroups", cgroups, "containment needs cgroups (v1 freezer or v2) and root")
    return Containment(instance, tmp_path / "attempts", cgroups, pids_max=512)


def test_a_step_that_detaches_is_gone_when_the_step_ends(store, make_settings, run_executor):
    marker = f"{300 + uuid.uuid4().int % 1000}.{os.getpid()}"
    script = f"setsid sleep {marker} & (sleep {marker} &) ; nohup sleep {marker} >/dev/null 2>&1 & echo detached"
    job = store.enqueue(JobSpec(steps=[{"name": "escape", "run": script}]), "t")
    run_executor(make_settings())
    wait_for(lambda: store.get(job.id).state.terminal, 30, what="the job to end")
    assert store.get(job.id).state is JobState.SUCCEEDED
    # On today's code the setsid and double-forked sleeps outlived the job.
    wait_for(lambda: not _alive(marker), 5, what=f"the detached sleeps to die: {_alive(marker)}")


def test_the_cgroup_caps_and_kills_a_fork_bomb_and_leaves_nothing(containment):
    proc = containment.spawn("bomb", 1, "f() { f | f & }; f", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    counts = []
    for _ in range(50):
        counts.append(len(containment.cgroups.pids("bomb.1")))
        time.sleep(0.01)
    assert 0 < max(counts) <= 512, counts  # capped at the attempt's pids limit
    assert containment.kill("bomb", 1)
    assert containment.cgroups.pids("bomb.1") == []
    proc.wait(5)
    containment.end("bomb", 1)
    assert ("bomb", 1) not in containment.attempts()


def test_a_fenced_attempt_is_killed_and_starts_nothing_more(containment):
    marker = f"{400 + uuid.uuid4().int % 1000}.{os.getpid()}"
    proc = containment.spawn("job", 3, f"setsid sleep {marker} & sleep {marker}")
    wait_for(lambda: len(_alive(marker)) == 2, 5, what="both sleeps to start")
    assert containment.fence("job", 3)
    assert not _alive(marker)
    proc.wait(5)
    with pytest.raises(Fenced):
        containment.spawn("job", 3, "true")
    with pytest.raises(Fenced), containment.guard("job", 3):
        pass
    assert ("job", 3) in containment.attempts()  # the mark stays, for a stalled executor that wakes up


def test_the_warden_kills_what_no_running_attempt_owns(store, make_settings, containment):
    settings = make_settings()
    warden = Warden("node-a", settings, jobs=store, containment=containment)
    job = store.enqueue(JobSpec(steps=[{"name": "s", "run": "true"}]), "t")
    claim = store.claim("default", "ex-1", lease_s=30, grace_s=5, node="node-a")
    marker = f"{500 + uuid.uuid4().int % 1000}.{os.getpid()}"
    containment.spawn(job.id, claim.attempt, f"sleep {marker}")
    wait_for(lambda: _alive(marker), 5, what="the step to start")
    assert warden.run_once().killed == []  # running: its own
    assert _alive(marker)
    store.cancel(job.id)  # cancelled while (say) its executor was away
    assert warden.run_once().killed == [(job.id, claim.attempt)]
    assert not _alive(marker)


def test_stopping_counts_only_the_attempts_it_really_killed(store, make_settings, containment):
    """`farm up` stopping says how many attempts the wardens killed: marks and empty cgroups
    of attempts that ended are not attempts still running, so an idle node kills none."""
    warden = Warden("node-a", make_settings(), jobs=store, containment=containment)
    containment.spawn("ended", 1, "true").wait(5)  # its lock file and (empty) cgroup stay until its end
    assert containment.fence("fenced", 2)  # a fenced mark stays a day
    assert warden.kill_all() == 0  # on today's code: 2, for nothing killed
    marker = f"{800 + uuid.uuid4().int % 100}.{os.getpid()}"
    proc = containment.spawn("live", 1, f"sleep {marker}")
    wait_for(lambda: _alive(marker), 5, what="the step to start")
    assert warden.kill_all() == 1
    assert not _alive(marker)
    proc.wait(5)
    assert warden.kill_all() == 0
    for job_id, attempt in containment.attempts():
        containment.end(job_id, attempt)


def test_without_cgroups_a_step_is_a_pid_namespace_that_takes_its_leftovers_along(tmp_path: Path):
    """Where farm may not make cgroups (not root), each step is the init of a PID namespace:
    what it detached dies when it ends."""
    from agents.containment import pid_namespaces

    require("user namespaces", pid_namespaces(), "unprivileged user namespaces with util-linux's unshare and setpriv")
    containment = Containment("pidns", tmp_path / "attempts", None, pidns=True)
    assert containment.kind == "PID namespace per step"
    marker = f"{600 + uuid.uuid4().int % 1000}.{os.getpid()}"
    proc = containment.spawn("job", 1, f"setsid sleep {marker} & (sleep {marker} &); sleep 0.5; echo done",
                             stdout=subprocess.PIPE)  # fmt: skip
    wait_for(lambda: len(_alive(marker)) == 2, 5, what="the detached sleeps")
    assert proc.communicate(timeout=10)[0] == b"done\n" and proc.returncode == 0
    wait_for(lambda: not _alive(marker), 5, what="the detached sleeps to die with the step")


def test_without_cgroups_a_step_dies_with_its_executor(tmp_path: Path):
    import sys

    from agents.containment import pid_namespaces

    require("user namespaces", pid_namespaces(), "unprivileged user namespaces with util-linux's unshare and setpriv")
    marker = f"{700 + uuid.uuid4().int % 1000}.{os.getpid()}"
    executor = subprocess.Popen([sys.executable, "-c", f"""
from pathlib import Path
from agents.containment import Containment
c = Containment("pidns", Path({str(tmp_path / 'attempts')!r}), None, pidns=True)
c.spawn("job", 1, "setsid sleep {marker} & sleep {marker}").wait()
"""], cwd=Path(__file__).resolve().parents[2])  # fmt: skip
    try:
        wait_for(lambda: len(_alive(marker)) == 2, 10, what="the step's sleeps")
    finally:
        executor.kill()
        executor.wait()
    wait_for(lambda: not _alive(marker), 5, what="the step to die with its executor")
