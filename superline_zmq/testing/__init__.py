"""Test and local-experiment helpers: real multi-process clusters on loopback.

``local_cluster`` starts N real node processes (``python -m superline_zmq.cli run``)
linked by the ZeroMQ adapter and tears every one of them down afterwards::

    from superline_zmq.testing import local_cluster

    async with local_cluster("myapp:app", nodes=3) as cluster:
        client = await connect(api, cluster.nodes[0].url, role="user")
        await cluster.kill(2)
        await cluster.wait_members(0, 1, timeout=2.0)

``LocalCluster(curve=True)`` runs the nodes under CURVE with throwaway keys
(:class:`ClusterKeys`), which a test can add, revoke and reload like an operator.
:class:`FaultProxy` (:mod:`superline_zmq.testing.faults`) is a TCP link a test can cut,
delay or blackhole; ``local_cluster(..., faults=True)`` puts one in front of every node, so
``cluster.partition([2])`` cuts node 2 off with every process alive, and
``cluster.heal()`` mends it.

:class:`FakeClock` and :class:`FakeNet` (:mod:`superline_zmq.testing.fakes`) test gossip
machines and drivers with no sockets and no waiting: a clock that moves when told and a
simulated network that drops, partitions and pauses on request.

For pytest, ``pytest_plugins = ["superline_zmq.testing.fixtures"]`` adds the
``superline_cluster`` factory fixture, and
:class:`superline_zmq.testing.conformance.AdapterConformance` is the suite every adapter
must pass (for your own adapters). Importing this package never imports pytest; those
two modules do.
"""

from superline_zmq.testing.cluster import ClusterError, LocalCluster, Node, NodeLinks, local_cluster
from superline_zmq.testing.fakes import FakeClock, FakeLink, FakeNet
from superline_zmq.testing.faults import FaultProxy
from superline_zmq.testing.keys import ClusterKeys
from superline_zmq.testing.wait import eventually

__all__ = [
    "ClusterError",
    "ClusterKeys",
    "FakeClock",
    "FakeLink",
    "FakeNet",
    "FaultProxy",
    "LocalCluster",
    "Node",
    "NodeLinks",
    "eventually",
    "local_cluster",
]
