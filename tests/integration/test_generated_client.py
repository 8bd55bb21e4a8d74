"""A real client no one here wrote: openapi-python-client generates a Python package from the
served /openapi.json, and that package drives a job on a real Redis with a real executor:
submit (twice, with one Idempotency-Key), wait, read the log, list and download an artifact.

Nothing generated is committed: the client is made in tmp_path on every run. The generator
must accept the whole document without a warning (`--fail-on-warning`); anything it rejects
or mistypes is a defect of the spec, not of this test.

The generator runs in a virtualenv of its own, made once per session with the project's own
versions of everything it shares with farm (constraints from this environment) except
typer: every openapi-python-client release caps typer (0.29.1: typer<0.28) below farm's
pin (typer==0.29.2), so it cannot be in the `test` extra: `pip install -e '.[test]'` would
fail to resolve. Move the pin there once a release accepts farm's typer.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib
import importlib.metadata
import os
import subprocess
import sys
import typing
import venv
from http import HTTPStatus
from pathlib import Path

import httpx
import pytest

from farm.api import create_app
from farm.models import JobState as FarmJobState
from tests.conftest import require, wait_for

GENERATOR = "openapi-python-client==0.29.1"
GENERATOR_TYPER = "typer==0.27.3"  # the newest typer the generator accepts
PACKAGE = "farm_generated_client"
TOKEN = "generated-client-admin"
KEY = "ci-push-4711"
CONTENT = b"made by farm\n"


@pytest.fixture(scope="session")
def generator(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The generator's bin directory (openapi-python-client, and the ruff its post-hooks run)."""
    root = tmp_path_factory.mktemp("generator")
    venv.create(root / "venv", with_pip=False)
    pins: dict[str, str] = {}
    for d in importlib.metadata.distributions():  # the first of a name is the one imported
        name = (d.metadata["Name"] or "").lower().replace("_", "-")
        if name and name not in ("typer", "farm"):
            pins.setdefault(name, f"{name}=={d.version}")
    (root / "constraints.txt").write_text("".join(f"{pin}\n" for pin in sorted(pins.values())))
    run = subprocess.run([sys.executable, "-m", "pip", "--python", str(root / "venv" / "bin" / "python"), "install", "-q",
                          "--disable-pip-version-check", GENERATOR, GENERATOR_TYPER, "-c", str(root / "constraints.txt")],
                         capture_output=True, text=True, timeout=240)  # fmt: skip
    require(GENERATOR, run.returncode == 0, f"pip could not install it from PyPI: {run.stderr[-2000:]}")
    return root / "venv" / "bin"


def generate(bin_dir: Path, spec: bytes, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    (out.parent / "openapi.json").write_bytes(spec)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}  # its post-hooks run `ruff`
    run = subprocess.run([str(bin_dir / "openapi-python-client"), "generate", "--path", str(out.parent / "openapi.json"),
                          "--output-path", str(out), "--meta", "none", "--fail-on-warning"],
                         capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    said = run.stdout + run.stderr
    assert run.returncode == 0 and "warning" not in said.lower(), f"the generator refused the spec:\n{said}"


@pytest.fixture
def client_package(generator: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Generates the client from a served app's spec and imports it: call with the spec's bytes."""

    def make(spec: bytes):  # type: ignore[no-untyped-def]
        generate(generator, spec, tmp_path / "client" / PACKAGE)
        monkeypatch.syspath_prepend(str(tmp_path / "client"))
        return importlib.import_module(PACKAGE)

    yield make
    for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
        del sys.modules[name]


@pytest.mark.timeout(120)
def test_a_generated_client_drives_a_job(make_settings, serve_app, run_executor, client_package):
    settings = make_settings(admin_token=TOKEN)
    served = serve_app(create_app(settings))
    got = httpx.get(f"{served.url}/openapi.json", timeout=10)
    assert got.status_code == 200
    gen = client_package(got.content)
    from farm_generated_client.api.jobs import (
        get_artifact_v1_jobs_job_id_artifacts_name_get as get_artifact,
    )
    from farm_generated_client.api.jobs import get_job_v1_jobs_job_id_get as get_job
    from farm_generated_client.api.jobs import get_log_v1_jobs_job_id_log_get as get_log
    from farm_generated_client.api.jobs import list_artifacts_v1_jobs_job_id_artifacts_get as list_artifacts
    from farm_generated_client.api.jobs import submit_v1_jobs_post as submit
    from farm_generated_client.models import (
        ArtifactInfo,
        ErrorBody,
        Job,
        JobSpec,
        JobState,
        Step,
        ValidationErrorBody,
    )
    from farm_generated_client.types import File

    # A header is absent or a string: a client offered None for one sends nothing httpx can encode.
    key_type = typing.get_type_hints(submit.sync_detailed)["idempotency_key"]
    assert type(None) not in typing.get_args(key_type), f"Idempotency-Key is typed {key_type}: the spec makes it nullable"

    run_executor(settings)
    spec = JobSpec(steps=[Step(name="build", run=f"mkdir -p dist && printf {CONTENT.decode()!r} > dist/out.txt && echo built-it")],
                   artifacts=["dist/*"])  # fmt: skip
    with gen.AuthenticatedClient(base_url=served.url, token=TOKEN, raise_on_unexpected_status=True,
                                 timeout=httpx.Timeout(10)) as client:  # fmt: skip
        first = submit.sync_detailed(client=client, body=spec, idempotency_key=KEY)
        assert first.status_code == HTTPStatus.CREATED and isinstance(first.parsed, Job), first.content
        again = submit.sync_detailed(client=client, body=spec, idempotency_key=KEY)
        assert again.status_code == HTTPStatus.OK and isinstance(again.parsed, Job), again.content
        job_id = first.parsed.id
        assert again.parsed.id == job_id

        refused = submit.sync_detailed(client=client, body=spec, idempotency_key="not a key")  # spaces: off the pattern
        assert refused.status_code == HTTPStatus.UNPROCESSABLE_ENTITY and isinstance(refused.parsed, ValidationErrorBody)
        assert [e.loc for e in refused.parsed.detail] == [["header", "idempotency-key"]]
        missing = get_job.sync("no-such-job", client=client)
        assert isinstance(missing, ErrorBody) and "no-such-job" in missing.detail

        def ended() -> Job | None:
            job = get_job.sync(job_id, client=client)
            assert isinstance(job, Job)
            return job if FarmJobState(job.state.value).terminal else None

        job = wait_for(ended, 30, interval=0.1, what=f"job {job_id} to end")
        assert isinstance(job, Job)
        log = get_log.sync(job_id, client=client)
        assert isinstance(log, str)
        assert job.state is JobState.SUCCEEDED, log
        assert [(s.name, s.exit_code) for s in job.steps] == [("build", 0)]
        assert isinstance(job.queued_at, dt.datetime) and isinstance(job.finished_at, dt.datetime), "times are date-times"
        assert job.queued_at <= job.finished_at
        assert "built-it" in log

        listed = list_artifacts.sync(job_id, client=client)
        assert isinstance(listed, list) and all(isinstance(a, ArtifactInfo) for a in listed)
        digest = hashlib.sha256(CONTENT).hexdigest()
        assert [(a.name, a.size, a.sha256) for a in listed] == [("dist/out.txt", len(CONTENT), digest)]
        download = get_artifact.sync_detailed(job_id, "dist/out.txt", client=client)
        assert download.status_code == HTTPStatus.OK and isinstance(download.parsed, File)
        assert download.parsed.payload.read() == CONTENT
        assert "out.txt" in download.headers["content-disposition"]
