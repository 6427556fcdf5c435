"""No credential reaches a file the sweep or Ray writes: plant secrets in the environment of a
real sweep (local Ray, local storage and a real S3 server), then grep every file written."""

import os
import secrets
import tempfile
from pathlib import Path

import pytest

from edgesweep.platform.driver import run_sweep
from edgesweep.platform.secrets import SECRET_ENV_VARS, keep_credentials_out_of_runtime_envs
from raycluster import require_loopback_namespace

pytestmark = [pytest.mark.ray]

SPEC = """\
name: secretive
storage: {storage}
grid:
  workload: [mod_add]
  weight_decay: [1.0, 0.0]
train: {{preset: tiny, max_steps: 40, eval_every: 10, checkpoint_every: 20}}
monitor: {{window: 4, every: 5, params: all}}
"""


def files_containing(root: Path, needles: list[bytes]) -> dict[str, list[str]]:
    hits: dict[str, list[str]] = {}
    for p in root.rglob("*"):
        try:
            if not p.is_file() or p.is_symlink():
                continue
            data = p.read_bytes()
        except OSError:
            continue  # sockets, vanished temp files
        found = [n.decode() for n in needles if n in data]
        if found:
            hits[str(p)] = found
    return hits


@pytest.fixture
def ray_with_planted_secrets(monkeypatch, tmp_path):
    """A local Ray cluster started with secrets in the environment (so its raylet and workers
    inherit them, as on a real machine), and the Ray temp dir to grep afterwards."""
    require_loopback_namespace()
    planted = {"AWS_SECRET_ACCESS_KEY": "sekret-" + secrets.token_hex(12),
               "AWS_SESSION_TOKEN": "tok-" + secrets.token_hex(12),
               "WANDB_API_KEY": "wandb-" + secrets.token_hex(12)}
    for k, v in planted.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    import ray

    tmp = Path(tempfile.mkdtemp(prefix="essecret-", dir="/tmp"))
    ray.init(address="local", num_cpus=2, include_dashboard=False, _temp_dir=str(tmp))
    try:
        yield planted, tmp
    finally:
        ray.shutdown()


def test_planted_secrets_are_in_no_file_the_sweep_or_ray_writes(ray_with_planted_secrets, tmp_path):
    planted, ray_tmp = ray_with_planted_secrets
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC.format(storage=tmp_path / "results"))
    assert run_sweep(str(spec)) == 0
    needles = [v.encode() for v in planted.values()]
    # the check itself works: a file holding a secret is found
    canary = tmp_path / "canary.txt"
    canary.write_bytes(needles[0])
    assert files_containing(tmp_path, needles) == {str(canary): [planted["AWS_SECRET_ACCESS_KEY"]]}
    canary.unlink()
    assert files_containing(tmp_path, needles) == {}   # storage, Tune state, report
    assert files_containing(ray_tmp, needles) == {}    # Ray's session logs and files
    assert any(ray_tmp.rglob("runtime_env_agent.log"))  # the log that used to hold them was written


def test_secret_variables_leave_the_propagation_list():
    from ray.tune.execution import class_cache

    keep_credentials_out_of_runtime_envs()
    assert not (set(class_cache.ENV_VARS_TO_PROPAGATE) & SECRET_ENV_VARS)
    assert "AWS_SECRET_ACCESS_KEY" in SECRET_ENV_VARS and os.environ is not None
