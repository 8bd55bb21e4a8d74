"""Executor side of farm: the claim loop, attempts of jobs, and the runtimes that run steps.

    attempt      one attempt of a claimed job, from workspace to finish
    cache        a job's dependency caches on the executor: restored before the first step, saved after the last
    containment  a cgroup per attempt, so the attempt's processes end as a whole
    executor     one slot of one pool: claims a job, runs it, repeats; drains on request
    lifeline     what ends a node's work when `farm up` dies without stopping
    logsink      buffers a running attempt's output for its Redis log stream
    quota        a job's disk quota: its workspace a filesystem of its own
    warden       one per node: attempt N+1 never starts while anything of attempt N lives
    watch        the thread that looks after the running attempt
    workspace    an attempt's directory, its source checked out, the environment its steps see
    runtimes/    where a step runs (local, docker, dind, sandbox, noop)
"""
