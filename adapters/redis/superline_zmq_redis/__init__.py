"""superline-zmq-redis: the Redis adapter for superline_zmq (channels over pub/sub, presence in keys).

::

    from superline_zmq_redis import redis_adapter

    adapter = await redis_adapter("redis://127.0.0.1:6379/0", prefix="chat")
    srv = create_socket_server(api, adapter=adapter)

See :mod:`superline_zmq_redis.adapter` for how it works and ``README.md`` for the how-to.
``python -m superline_zmq_redis.node MODULE:APP --url URL`` runs an app as one node.
"""

from superline_zmq_redis.adapter import RedisAdapter, RedisPresence, RedisPresenceError, redis_adapter

__version__ = "0.1.0"

__all__ = ["RedisAdapter", "RedisPresence", "RedisPresenceError", "__version__", "redis_adapter"]
