"""Can this cluster ever run one trial? Checked before Tune schedules anything.

Tune waits forever for a placement that no node can give (``trial_resources: {gpu: 4}`` on a
CPU cluster): the sweep hangs with no message. A fixed cluster that has no node big enough for
one trial is an error naming the key; an autoscaling cluster may still grow one, so there the
driver warns and waits up to a timeout (``--resource-timeout``; 600 s by default on a cluster
that looks autoscaling, which is what Tune itself takes from the launcher's bootstrap file).
"""

from __future__ import annotations

import time
from pathlib import Path

from ..storage.fs import env_seconds
from .spec import SpecError, SweepSpec

RESOURCE_TIMEOUT_ENV = "EDGESWEEP_RESOURCE_TIMEOUT_S"

__all__ = ["check_trial_resources", "looks_autoscaling", "AUTOSCALING_TIMEOUT_S", "reuse_workers"]

AUTOSCALING_TIMEOUT_S = 600.0


def looks_autoscaling() -> bool:
    """Tune's own test (ray.tune.execution.cluster_info): the cluster launcher leaves
    ~/ray_bootstrap_config.yaml on the head, where a job's driver runs. KubeRay's autoscaler
    leaves no such file: pass --resource-timeout there."""
    return Path("~/ray_bootstrap_config.yaml").expanduser().exists()


def reuse_workers(alive_nodes: int, autoscaling: bool, env: str | None = None) -> bool:
    """Whether Tune should run a finished trial's next trial in the same worker (reuse_actors).

    On one node it saves a process start and a torch import per trial (seconds each). With
    several nodes it is off: in the node-loss rehearsal (tests/test_cluster_nodeloss.py) Tune
    kept feeding the surviving node's reused worker and never scheduled a trial on the node
    that replaced the lost one, so work that could run in parallel ran in series; on a cluster
    trials are long and a worker start is negligible. ``EDGESWEEP_REUSE_WORKERS`` = 1 / 0
    overrides."""
    if env is not None and env.strip() in ("0", "1"):
        return env.strip() == "1"
    return alive_nodes <= 1 and not autoscaling


def _largest(nodes: list[dict]) -> tuple[float, float]:
    cpu = max((n["Resources"].get("CPU", 0.0) for n in nodes), default=0.0)
    gpu = max((n["Resources"].get("GPU", 0.0) for n in nodes), default=0.0)
    return cpu, gpu


def _fits(nodes: list[dict], cpu: float, gpu: float) -> bool:
    return any(n["Resources"].get("CPU", 0.0) >= cpu and n["Resources"].get("GPU", 0.0) >= gpu
               for n in nodes)


def check_trial_resources(ray, spec: SweepSpec, timeout_s: float | None = None, log=print,
                          poll_s: float = 5.0) -> None:
    """SpecError unless some alive node can hold one trial's ``trial_resources``.

    ``timeout_s``: how long to wait for a node that fits (None: 0 on a fixed cluster,
    :data:`AUTOSCALING_TIMEOUT_S` when :func:`looks_autoscaling`)."""
    cpu, gpu = float(spec.trial_resources["cpu"]), float(spec.trial_resources["gpu"])
    if timeout_s is None:
        timeout_s = env_seconds(RESOURCE_TIMEOUT_ENV, None)
        if timeout_s is None:
            timeout_s = AUTOSCALING_TIMEOUT_S if looks_autoscaling() else 0.0
    deadline = time.monotonic() + timeout_s
    warned = False
    while True:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        if _fits(nodes, cpu, gpu):
            if warned:
                log("a node that fits one trial has joined; scheduling")
            return
        big_cpu, big_gpu = _largest(nodes)
        have = (f"the largest of its {len(nodes)} node(s) has {big_cpu:g} CPU and {big_gpu:g} GPU")
        if time.monotonic() >= deadline:
            waited = f" (waited {timeout_s:g} s for one to join)" if timeout_s > 0 else ""
            raise SpecError(
                f"{spec.source}: trial_resources: one trial needs {cpu:g} CPU and {gpu:g} GPU on one "
                f"node, and no node of this cluster has that{waited}: {have}. Lower trial_resources, "
                "add a node that fits, or on an autoscaling cluster pass --resource-timeout SECONDS")
        if not warned:
            log(f"WARNING: no node can hold one trial yet (needs {cpu:g} CPU, {gpu:g} GPU; {have}); "
                f"waiting up to {timeout_s:g} s for the autoscaler to add one")
            warned = True
        time.sleep(min(poll_s, max(0.1, deadline - time.monotonic())))
