"""deploy/ is checked, not just text: each config against the schema its tool applies.

* deploy/cluster-aws.yaml against the cluster-launcher schema inside the installed Ray
  (ray/autoscaler/ray-schema.json), and through Ray's own prepare_config + validate_config,
  which is what `ray up` runs before it contacts the cloud.
* deploy/rayjob-grokking.yaml against KubeRay's RayJob CRD (ray.io/v1), vendored as
  deploy/schemas/kuberay-rayjob-v1.schema.json (its header names the KubeRay tag and file; it is
  derived by deploy/schemas/derive_kuberay_schema.py and rejects unknown fields, as kubectl's
  strict field validation does).

Each schema is shown to reject a typo'd key: a schema that accepted anything would pass the
first tests and fail these. Not checkable here: Ray's schema leaves `provider` and each
`node_config` open (node_config goes to EC2's RunInstances as is), so typos there surface only
at launch.
"""

from __future__ import annotations

import copy
import json
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml

from edgesweep.platform.spec import load_spec

REPO = Path(__file__).resolve().parents[1]
AWS = REPO / "deploy" / "cluster-aws.yaml"
RAYJOB = REPO / "deploy" / "rayjob-grokking.yaml"
KUBERAY_SCHEMA = REPO / "deploy" / "schemas" / "kuberay-rayjob-v1.schema.json"


def _ray_schema() -> dict:
    import ray.autoscaler

    path = Path(ray.autoscaler.__file__).with_name("ray-schema.json")
    return json.loads(path.read_text())


def _errors(schema: dict, doc: dict) -> list[str]:
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in cls(schema).iter_errors(doc)]


def _rename(doc: dict, path: tuple, new_key: str) -> dict:
    """A copy of doc with the key at `path` renamed to new_key (the typo)."""
    doc = copy.deepcopy(doc)
    node = doc
    for part in path[:-1]:
        node = node[part]
    node[new_key] = node.pop(path[-1])
    return doc


# ------------------------------------------------------------------ Ray cluster launcher

def test_cluster_aws_matches_rays_schema():
    assert _errors(_ray_schema(), yaml.safe_load(AWS.read_text())) == []


def test_cluster_aws_passes_ray_up_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(yaml.safe_load(AWS.read_text()))  # fills the AWS defaults, offline
    validate_config(config)  # raises on any problem
    assert config["head_node_type"] == "head"
    # the head keeps 0 CPUs (only the driver runs there) and every worker type can start
    assert config["available_node_types"]["head"]["resources"] == {"CPU": 0}
    assert config["max_workers"] >= sum(t.get("min_workers", 0) for t in config["available_node_types"].values())


@pytest.mark.parametrize("path,typo", [
    (("setup_commands",), "setup_comands"),
    (("available_node_types", "gpu_worker", "min_workers"), "min_worker"),
    (("available_node_types", "head", "node_config"), "nodeconfig"),
    (("idle_timeout_minutes",), "idle_timeout_minute"),
    (("auth", "ssh_user"), "ssh_usr"),
])
def test_ray_schema_rejects_a_typo(path, typo):
    errors = _errors(_ray_schema(), _rename(yaml.safe_load(AWS.read_text()), path, typo))
    assert any(f"'{typo}' was unexpected" in e for e in errors), errors


# ------------------------------------------------------------------ KubeRay RayJob

def _kuberay() -> dict:
    return json.loads(KUBERAY_SCHEMA.read_text())


def test_kuberay_schema_names_its_source():
    header = _kuberay()["$comment"]
    assert "KubeRay v1." in header and "ray-operator/config/crd/bases/ray.io_rayjobs.yaml" in header


def test_rayjob_matches_the_kuberay_crd():
    assert _errors(_kuberay(), yaml.safe_load(RAYJOB.read_text())) == []


def test_rayjob_runs_this_ray_and_an_existing_sweep():
    import ray

    job = yaml.safe_load(RAYJOB.read_text())["spec"]
    # The image is built FROM rayproject/ray:<rayVersion>: it must be the Ray this repo supports.
    assert job["rayClusterSpec"]["rayVersion"] == ray.__version__
    argv = shlex.split(job["entrypoint"])
    assert argv[:4] == ["python", "-m", "edgesweep", "run"]
    spec = load_spec(REPO / argv[4], storage=argv[argv.index("--storage") + 1])
    assert spec.storage.startswith("s3://")


WORKER = ("spec", "rayClusterSpec", "workerGroupSpecs", 0)
CONTAINER = WORKER + ("template", "spec", "containers", 0)


@pytest.mark.parametrize("path,typo", [
    (("spec", "shutdownAfterJobFinishes"), "shutdownAfterJobFinish"),
    (("spec", "rayClusterSpec", "headGroupSpec", "rayStartParams"), "rayStartParam"),
    (WORKER + ("maxReplicas",), "maxReplica"),
    (CONTAINER + ("envFrom",), "envForm"),
    (CONTAINER + ("resources", "limits"), "limit"),
])
def test_kuberay_schema_rejects_a_typo(path, typo):
    errors = _errors(_kuberay(), _rename(yaml.safe_load(RAYJOB.read_text()), path, typo))
    assert any(f"'{typo}' was unexpected" in e for e in errors), errors


def test_kuberay_schema_rejects_a_wrong_type_and_a_missing_field():
    job = yaml.safe_load(RAYJOB.read_text())
    bad = copy.deepcopy(job)
    bad["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] = "3"
    assert any("is not of type 'integer'" in e for e in _errors(_kuberay(), bad))
    bad = copy.deepcopy(job)
    del bad["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["groupName"]
    assert any("'groupName' is a required property" in e for e in _errors(_kuberay(), bad))
