"""superline-zmq-redis: the Redis adapter for superline_zmq (channels over pub/sub, presence in keys).

::

    from superline_zmq_redis import redis_adapter

    adapter = await redis_adapter("redis://127.0.0.1:6379/0", prefix="chat")
    srv = create_socket_server(api, adapter=adapter)

See :mod:`superline_zmq_redis.adapter` for how it works and ``README.md`` for the how-to.
``superline-zmq run MODULE:APP --adapter redis --redis-url URL`` runs an app as one node
(``superline-zmq-redis MODULE:APP --url URL`` is the same command under its old name).
"""

from superline_zmq_redis._version import __version__
from superline_zmq_redis.adapter import RedisAdapter, RedisPresence, RedisPresenceError, redis_adapter

__all__ = ["RedisAdapter", "RedisPresence", "RedisPresenceError", "__version__", "redis_adapter"]
