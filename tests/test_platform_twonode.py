"""Two Ray nodes on one machine share one sweep (its own cluster, never overlapping others)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from raycluster import REPO, VENV_BIN, RayCluster, check_tables, cluster_env, require_loopback_namespace

from edgesweep.storage import scan

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_two_nodes_share_the_sweep(tmp_path, make_sweep):
    require_loopback_namespace()
    cluster = RayCluster(num_cpus=1)
    old_path = os.environ.get("PATH", "")
    os.environ["PATH"] = VENV_BIN + os.pathsep + old_path
    try:
        cluster.start_head()
        cluster.add_node("node2")
        storage = tmp_path / "results"
        spec = make_sweep(tmp_path / "two.yaml", "two", storage, max_steps=400)
        out = subprocess.run([sys.executable, "-m", "edgesweep", "submit", str(spec),
                              "--address", cluster.dashboard], cwd=REPO, env=cluster_env(),
                             capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, (out.stdout + out.stderr)[-4000:] + cluster.tail()
        trials = scan(storage / "two", "trials").collect()
        # one CPU per node and one CPU per trial: the two trials must run on different nodes
        assert trials.height == 2 and trials["node_id"].n_unique() == 2, trials.select("trial_id", "node_id")
        check_tables(storage / "two", set(trials["trial_id"]))
    finally:
        os.environ["PATH"] = old_path
        cluster.stop()
        assert cluster.our_pids() == []
