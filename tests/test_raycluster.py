"""The tests' own Ray clusters (tests/raycluster.py): a node whose `ray start` fails or hangs in
its start-up is started again, as the same node, and the cluster then works.

The failures seen (a 2-core machine running the suite in two processes): Ray's 30 s for a new
raylet to register with the GCS ran out for both worker nodes of one cluster, and their
`ray start` exited; under heavier load a worker node's start was still going when the harness'
60 s ran out. Here a first start fails at once instead (an argument `ray start` refuses), which
takes the same path through the harness as a `ray start` that exits before it says it started;
and a start that hangs is a process that never says anything, given a short patience.
"""

from __future__ import annotations

import pytest
from raycluster import START_ATTEMPTS, STARTED, RayCluster, require_loopback_namespace

pytestmark = [pytest.mark.ray, pytest.mark.slow]

BAD = "--num-cpus=not-a-number"  # the last --num-cpus wins, and click refuses it: exit 2
HUNG = ["sleep", "600"]          # a start that never says it started, nor exits
HUNG_PATIENCE = 3                # seconds a hung start gets here (the harness gives a real one 180)


class Flaky(RayCluster):
    """`ray start` of each node in `fail` is refused for that node's first `fail[name]` starts;
    the first `hang[name]` starts of a node in `hang` hang, and get HUNG_PATIENCE seconds."""

    def __init__(self, fail: dict[str, int], hang: dict[str, int] | None = None, **kw):
        super().__init__(**kw)
        self.fail, self.hang = fail, hang or {}

    def _hangs(self, name: str) -> bool:
        return self.attempts[name] <= self.hang.get(name, 0)

    def _command(self, name, temp, args, num_cpus, resources):
        cmd = super()._command(name, temp, args, num_cpus, resources)
        if self._hangs(name):
            return HUNG
        return cmd + [BAD] if self.attempts[name] <= self.fail.get(name, 0) else cmd

    def _patience(self, name, timeout):
        return HUNG_PATIENCE if self._hangs(name) else super()._patience(name, timeout)


def test_a_node_whose_start_fails_or_hangs_is_started_again_and_one_that_always_fails_is_an_error():
    require_loopback_namespace()
    cluster = Flaky({"head": 1, "w1": 2, "never": START_ATTEMPTS}, hang={"slow": 1}, num_cpus=1)
    try:
        cluster.start_head(warm_up=False)
        cluster.add_node("w1")
        assert cluster.attempts == {"head": 2, "w1": 3}
        # every start has its own log; the refused ones are kept, and say why
        first = (cluster.base / "head.log").read_text()
        assert "not-a-number" in first and STARTED not in first
        assert STARTED in (cluster.base / "head.start2.log").read_text()
        assert STARTED in (cluster.base / "w1.start3.log").read_text()

        # a start that hangs is killed once its patience runs out, and the node started again
        cluster.add_node("slow")
        assert cluster.attempts["slow"] == 2
        assert (cluster.base / "slow.log").read_text() == ""
        assert STARTED in (cluster.base / "slow.start2.log").read_text()
        hung = [p for p in cluster.procs if p.args == HUNG]
        assert len(hung) == 1 and hung[0].poll() is not None, "the hung start was not killed"
        ids = cluster.wait_node_ids(["head", "w1", "slow"])
        assert len(set(ids.values())) == 3  # all joined, as three nodes

        with pytest.raises(RuntimeError) as err:
            cluster.add_node("never")
        assert f"Ray node 'never': start {START_ATTEMPTS} of {START_ATTEMPTS} exited with 2" in str(err.value)
        assert cluster.our_pids_of("never") == []
    finally:
        cluster.stop()
        assert cluster.our_pids() == []
