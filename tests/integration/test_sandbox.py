"""The sandbox runtime's own promises, beyond the runtime contract every runtime keeps
(tests/integration/test_runtime_contract.py) and the escape suite (tests/security/):

- a step runs under gVisor: its kernel is gVisor's, not the host's;
- never as root, even when docker.user would allow it; no capabilities;
- the root filesystem is read-only, /tmp a tmpfs of sandbox.tmp_bytes;
- no network: a listener on the node's loopback is out of reach, unless the job may have
  the host's network (`network: host`), which it then reaches;
- where runsc is not registered with the daemon, the executor refuses to start, saying why.
"""

from __future__ import annotations

import pytest

from farm.models import JobSpec, JobState
from farm.store.executors import ExecutorState
from tests.conftest import RunningExecutor, wait_for

pytestmark = pytest.mark.docker


@pytest.fixture
def sandbox(make_settings, run_executor, docker_image, store):  # type: ignore[no-untyped-def]
    settings = make_settings(executors={"runtime": "sandbox"}, docker={"default_image": docker_image, "user": "0:0"},
                             sandbox={"tmp_bytes": 8 * 1024 * 1024})  # fmt: skip
    ex = run_executor(settings, "ex-sandbox")
    wait_for(lambda: ex.executor.state is not ExecutorState.STARTING, 60, what="the sandbox executor to start")
    assert ex.executor.error is None, ex.executor.error
    return ex


def run(store, script: str, **spec: object):  # type: ignore[no-untyped-def]
    job = store.submit(JobSpec(steps=[{"name": "probe", "run": script}], **spec), "t").job  # type: ignore[arg-type]
    done = wait_for(lambda: (j := store.get(job.id)).state.terminal and j, 60, what="the job to end")
    return done, "".join(c.data for c in store.read_log(job.id) if c.data)


def test_a_step_runs_in_gvisor_as_no_one_on_a_read_only_root(sandbox, store):
    script = ("uname -r; id -u; grep CapEff /proc/self/status; "
              "touch /etc/x 2>/dev/null && echo rootfs-writable || echo rootfs-read-only; "
              "dd if=/dev/zero of=/tmp/fill bs=1M count=16 2>/dev/null; du -m /tmp/fill | cut -f1")  # fmt: skip
    done, log = run(store, script)
    assert done.state is JobState.SUCCEEDED, log
    lines = log.splitlines()
    i = lines.index("--- step probe")
    kernel, uid, caps, rootfs, tmp_mb = lines[i + 1 : i + 6]
    host_kernel = open("/proc/sys/kernel/osrelease").read().strip()
    assert kernel != host_kernel, f"the step saw the host's kernel {host_kernel}"
    assert uid == "65532"  # sandbox.user, though docker.user is 0:0
    assert caps.split()[-1] == "0000000000000000", caps
    assert rootfs == "rootfs-read-only"
    assert int(tmp_mb) <= 8, f"/tmp took {tmp_mb} MiB past its 8 MiB"


def test_no_network_unless_the_job_may_have_the_hosts(sandbox, store, listener):
    port, _ = listener
    probe = f"nc -w 2 127.0.0.1 {port} </dev/null || echo unreachable"
    done, log = run(store, probe)
    assert done.state is JobState.SUCCEEDED, log
    assert "unreachable" in log and "reached-the-node" not in log, log
    done, log = run(store, probe, network="host")  # the API admits it for tenants allowed the host network (farm.permissions)
    assert done.state is JobState.SUCCEEDED, log
    assert "reached-the-node" in log, log


def test_an_executor_refuses_to_start_where_runsc_is_not_registered(make_settings, docker_image):
    settings = make_settings(executors={"runtime": "sandbox"}, docker={"default_image": docker_image},
                             sandbox={"docker_runtime": "runsc-missing"})  # fmt: skip
    ex = RunningExecutor("ex-no-gvisor", settings)
    try:
        wait_for(lambda: ex.executor.error, 60, what="the executor to refuse")
        assert "needs gVisor" in ex.executor.error and "runsc-missing" in ex.executor.error, ex.executor.error
    finally:
        ex.stop()


def test_a_warm_cache_restore_reaches_a_sandboxed_step(sandbox, store):
    """The node's overlay of a warm cache entry is mounted in the workspace before the
    step's container starts: gVisor's gofer serves it to the step like the rest."""
    cache = {"key": "deps", "paths": ["deps"], "save": "always"}
    make = "[ -d deps ] && echo restored-$(cat deps/pkg) || { mkdir deps; echo v1 > deps/pkg; echo built; }; echo more > deps/new"
    first, log = run(store, make, caches=[cache])
    assert first.state is JobState.SUCCEEDED and "built" in log, log
    second, log = run(store, make, caches=[cache])
    assert second.state is JobState.SUCCEEDED and "restored-v1" in log, log
    assert second.caches[0].restore == "hit"
