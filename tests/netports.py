"""Ports for the servers tests start (Ray nodes, SeaweedFS), chosen so nothing else takes them.

A port found with bind(("127.0.0.1", 0)) comes from the kernel's ephemeral range (32768–60999
here), the same pool that Ray's raylet, object manager and dashboard, and every outgoing
connection, draw their own ports from in the seconds between our choice and the server's bind:
a rare but real collision (a node without its job agent, a head that never starts). Ports are
therefore drawn below that range and above Ray's worker range (10002–19999), checked free with a
bind, and never handed out twice in one test session.
"""

from __future__ import annotations

import random
import socket

LOW, HIGH = 20000, 32767  # below the ephemeral range, above Ray's default worker ports
_given: set[int] = set()
_rng = random.Random()


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    for _ in range(1000):
        port = _rng.randint(LOW, HIGH)
        if port not in _given and _bindable(port):
            _given.add(port)
            return port
    raise RuntimeError(f"no free TCP port on 127.0.0.1 in {LOW}-{HIGH}")


def free_ports(n: int) -> list[int]:
    """n distinct free ports."""
    return [free_port() for _ in range(n)]
