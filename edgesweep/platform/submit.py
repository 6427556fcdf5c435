"""`python -m edgesweep submit SWEEP.yaml --address URL`: the driver as a Ray job.

The same as ``ray job submit --working-dir . -- python -m edgesweep run SWEEP.yaml``, with the
spec validated locally first (a typo fails here, not after an upload) and logs followed.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from fnmatch import fnmatch
from pathlib import PurePosixPath

from .spec import DEFAULT_MAX_TRIALS, SpecError, load_spec

# Never upload environments, results or VCS data as the job's working dir. Ray also honours
# .gitignore, but an explicit list keeps uploads small for checkouts without one.
EXCLUDES = [".venv", "venv", ".git", "results", "**/__pycache__", ".pytest_cache",
            ".hypothesis", "*.egg-info", "docs/results"]


def left_out_of_the_upload(spec_path: str, working_dir: str) -> str | None:
    """Why the job would not find a relative ``spec_path`` (None when it would). The job runs
    ``edgesweep run SPEC`` in an upload of ``working_dir`` that leaves out :data:`EXCLUDES` and,
    as Ray does, what git ignores; a relative path resolves in that upload. An absolute path is
    read as it is, on the machine the job's driver runs on (right for a local cluster)."""
    if os.path.isabs(spec_path):
        return None
    rel = os.path.relpath(os.path.abspath(os.path.join(working_dir, spec_path)), working_dir)
    parts = PurePosixPath(rel.replace(os.sep, "/")).parts
    if parts[0] == "..":
        return f"it lies outside {working_dir}, the folder uploaded as the job's working dir"
    for pattern in EXCLUDES:
        name = pattern.removeprefix("**/")
        if "/" in name:
            if "/".join(parts).startswith(name + "/"):
                return f"the upload of {working_dir} leaves out {name}/, where it lies"
            continue
        # A name without a slash leaves out a folder of that name at any depth: name the one
        # the spec is in (docs/results/…, not the top-level results/ a reader thinks of).
        hit = next((i for i, part in enumerate(parts[:-1]) if fnmatch(part, name)), None)
        if hit is not None:
            which = "matching" if any(c in name for c in "*?[") else "named"
            return (f"it lies in {'/'.join(parts[:hit + 1])}/, and the upload of {working_dir} leaves out "
                    f"every folder {which} {name!r}")
    try:
        ignored = subprocess.run(["git", "-C", working_dir, "check-ignore", "-q", rel],
                                 capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        ignored = False  # no git here: Ray's own .gitignore rule cannot be checked
    if ignored:
        return f"git ignores it, and Ray leaves what git ignores out of the upload of {working_dir}"
    return None


def _submit_with_retry(client, timeout_s: float = 90.0, **kwargs) -> str:
    """submit_job, retried while a just-started head has no job agent yet (Ray answers
    HTTP 500 "No available agent to submit job" for the first seconds of a cluster)."""
    deadline = time.time() + timeout_s
    while True:
        try:
            return client.submit_job(**kwargs)
        except RuntimeError as exc:
            if "No available agent" not in str(exc) or time.time() > deadline:
                raise
            time.sleep(2)


def job_entrypoint(spec_path: str, storage: str | None = None, resume: bool = False,
                   max_trials: int = DEFAULT_MAX_TRIALS, aggregate: bool = True,
                   resource_timeout: float | None = None) -> list[str]:
    """The job's command: ``edgesweep run`` with the driver's options that were given."""
    entry = ["python", "-m", "edgesweep", "run", spec_path]
    if storage:
        entry += ["--storage", storage]
    if resume:
        entry += ["--resume"]
    if max_trials != DEFAULT_MAX_TRIALS:
        entry += ["--max-trials", str(max_trials)]
    if not aggregate:
        entry += ["--no-aggregate"]
    if resource_timeout is not None:
        entry += ["--resource-timeout", repr(float(resource_timeout))]
    return entry


def submit_sweep(spec_path: str, address: str, wait: bool = True, storage: str | None = None,
                 extra_pip: list[str] | None = None, resume: bool = False,
                 max_trials: int = DEFAULT_MAX_TRIALS, aggregate: bool = True,
                 resource_timeout: float | None = None) -> int:
    # fail fast (a bad storage root, too many trials), before any network call
    spec = load_spec(spec_path, storage=storage, max_trials=max_trials)
    from .trackers import check_trackers  # the tracker's package need only be on the cluster
    check_trackers(spec, spec.storage, here=False)  # the job runs with the cluster's environment
    why = left_out_of_the_upload(spec_path, os.getcwd())
    if why:
        raise SpecError(f"{spec_path}: the job could not read this spec: {why}. Copy it into the folder "
                        "you submit from (outside those folders), or give its absolute path, which the job "
                        "reads where the cluster shares this machine's files")
    from ray.job_submission import JobStatus, JobSubmissionClient

    entry = job_entrypoint(spec_path, storage=storage, resume=resume, max_trials=max_trials,
                           aggregate=aggregate, resource_timeout=resource_timeout)
    runtime_env = {"working_dir": os.getcwd(), "excludes": EXCLUDES}
    if extra_pip:
        runtime_env["pip"] = list(extra_pip)
    # Pass S3 endpoint/region settings through; credentials stay in the cluster's own
    # environment/credential chain and are never put in the job spec.
    env = {k: os.environ[k] for k in ("EDGESWEEP_S3_ENDPOINT", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
                                      "AWS_REGION", "AWS_DEFAULT_REGION", "EDGESWEEP_RESULTS_BASE")
           if k in os.environ}
    if env:
        runtime_env["env_vars"] = env
    client = JobSubmissionClient(address)
    job_id = _submit_with_retry(client, entrypoint=shlex.join(entry), runtime_env=runtime_env,
                                metadata={"edgesweep_sweep": spec.name})
    print(f"submitted sweep {spec.name!r} ({len(spec.trials)} trials) as Ray job {job_id}", flush=True)
    if not wait:
        print(f"follow it with: ray job logs --address {address} -f {job_id}")
        return 0

    async def follow():
        async for lines in client.tail_job_logs(job_id):
            sys.stdout.write(lines)
            sys.stdout.flush()

    try:
        import asyncio
        asyncio.run(follow())
    except Exception as exc:  # log streaming is best effort; status below is authoritative
        print(f"(log streaming stopped: {exc})", file=sys.stderr)
    while True:
        status = client.get_job_status(job_id)
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            break
        time.sleep(2)
    print(f"job {job_id}: {status}", flush=True)
    return 0 if status == JobStatus.SUCCEEDED else 1
