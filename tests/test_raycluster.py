"""The tests' own Ray clusters (tests/raycluster.py): a node whose `ray start` fails in its
start-up is started again, as the same node, and the cluster then works.

The failure seen (a 2-core machine running the suite in two processes): Ray's 30 s for a new
raylet to register with the GCS ran out for both worker nodes of one cluster, and their
`ray start` exited. Here a first start fails at once instead (an argument `ray start` refuses),
which takes the same path through the harness: a `ray start` that exits before it says it started.
"""

from __future__ import annotations

import pytest
from raycluster import START_ATTEMPTS, STARTED, RayCluster, require_loopback_namespace

pytestmark = [pytest.mark.ray, pytest.mark.slow]

BAD = "--num-cpus=not-a-number"  # the last --num-cpus wins, and click refuses it: exit 2


class Flaky(RayCluster):
    """`ray start` of each node in `fail` is refused for that node's first `fail[name]` starts."""

    def __init__(self, fail: dict[str, int], **kw):
        super().__init__(**kw)
        self.fail = fail

    def _command(self, name, temp, args, num_cpus, resources):
        cmd = super()._command(name, temp, args, num_cpus, resources)
        return cmd + [BAD] if self.attempts[name] <= self.fail.get(name, 0) else cmd


def test_a_node_whose_start_fails_is_started_again_and_one_that_always_fails_is_an_error():
    require_loopback_namespace()
    cluster = Flaky({"head": 1, "w1": 2, "never": START_ATTEMPTS}, num_cpus=1)
    try:
        cluster.start_head(warm_up=False)
        cluster.add_node("w1")
        assert cluster.attempts == {"head": 2, "w1": 3}
        # every start has its own log; the refused ones are kept, and say why
        first = (cluster.base / "head.log").read_text()
        assert "not-a-number" in first and STARTED not in first
        assert STARTED in (cluster.base / "head.start2.log").read_text()
        assert STARTED in (cluster.base / "w1.start3.log").read_text()
        ids = cluster.wait_node_ids(["head", "w1"])
        assert len(set(ids.values())) == 2  # both joined, as two nodes

        with pytest.raises(RuntimeError) as err:
            cluster.add_node("never")
        assert f"Ray node 'never': start {START_ATTEMPTS} of {START_ATTEMPTS} exited with 2" in str(err.value)
        assert cluster.our_pids_of("never") == []
    finally:
        cluster.stop()
        assert cluster.our_pids() == []
