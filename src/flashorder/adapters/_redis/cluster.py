"""The Redis Cluster client of the service: redis-py's, with connections that say so when
they were closed under a command.

On a failover error (a node that refuses connections, ``CLUSTERDOWN``) redis-py's cluster
client closes every connection of every node (``RedisCluster.aclose`` in its retry paths),
the connections that other commands hold at that moment included. Such a command, between
taking its connection and writing to it, then meets the socket as it was left: its writer
gone (``AttributeError: 'NoneType' object has no attribute 'writelines'``) or, on uvloop,
its transport closed (``RuntimeError``). Neither is a ``RedisError``: the client would not
retry the command, and the request would answer 500 for what is a lost connection.

``ClusterConnection`` checks the writer just before each write and raises redis-py's
``ConnectionError`` when it is gone or closing: the cluster client then treats the command
as any other whose connection broke (it refreshes its slot map and retries), and the
adapters' ``translated()`` makes what is left of it a 503.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry
from redis.exceptions import ConnectionError as RedisConnectionError


class ClusterConnection(Connection):
    """A node's connection that fails a write on a closed socket with ``ConnectionError``."""

    async def _send_packed_command(self, command: Iterable[bytes]) -> None:
        writer = self._writer
        # No await between this check and the write: nothing can close it in between.
        if writer is None or writer.is_closing():
            raise RedisConnectionError(
                f"the connection to {self.host}:{self.port} was closed under the command"
            )
        await super()._send_packed_command(command)


def cluster_client(
    nodes: Sequence[tuple[str, int]],
    *,
    max_connections: int,
    retry: Retry,
    socket_timeout: float,
    socket_connect_timeout: float,
) -> RedisCluster:
    client = RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in nodes],
        max_connections=max_connections,
        retry=retry,
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_connect_timeout,
    )
    # RedisCluster takes no connection class of its own: every node it discovers takes its
    # class from these keyword arguments (shared with its node manager), and the startup
    # nodes, built already, are given it here.
    client.connection_kwargs["connection_class"] = ClusterConnection
    for node in client.nodes_manager.startup_nodes.values():
        node.connection_class = ClusterConnection
    return client
