"""The Lua scripts behind presence: every write and every read is one script call (one round trip).

Keys (``p`` is the adapter's prefix; ``node`` a node id, ``id`` a connection id)::

    p:nodes             hash   node -> last heartbeat (ms, Redis TIME)      every registered node
    p:alive:<node>      string "1" with a TTL (PX presence_ttl)             the node's liveness
    p:node:<node>       set    connection ids on the node                   index by node
    p:nrooms:<node>     hash   room -> members on the node                  topology's room list
    p:conn:<id>         hash   d=descriptor (msgpack) n=node u=user r=rooms (JSON array)
    p:user:<user>       set    connection ids of the user                   index by user
    p:room:<room>       set    connection ids in the room                   index by room
    p:seq:<node>        string the number of the node's last presence change

Every write also publishes what it changed on the channel ``p:presence``, in the same
atomic step, numbered per node (``p:seq:<node>``): the presence events' mirror
(:mod:`superline_zmq_redis._mirror`) applies those in order. A message is ``kind (1 byte)
+ len(node) (1 byte) + node + seq (decimal) + ":" + data`` with kind ``U`` (a descriptor
put; data: the descriptor), ``X`` (a connection removed; data: its id), ``R`` (the
node's slice was rewritten by a registration: read it whole), ``L`` (the node left) or
``F`` (the node was forgotten); ``L`` and ``F`` reset the numbering (seq 0).

A node is the only writer of its own connections. Reads skip connections whose node's
``alive`` key is gone, so a crashed node drops out when its key expires; the first
liveness poll after ``forget_after`` removes its entries for good (``SCAN_NODES``).
The scripts touch keys they do not declare, so they need a standalone Redis (or one
primary), not Redis Cluster.
"""

from __future__ import annotations

import hashlib

_PRELUDE = """
local p = ARGV[1]
local function unindex(id)
  local ck = p .. ':conn:' .. id
  local old = redis.call('HMGET', ck, 'n', 'u', 'r')
  local node = old[1]
  if not node then return false end
  if old[2] then redis.call('SREM', p .. ':user:' .. old[2], id) end
  if old[3] then
    local nk = p .. ':nrooms:' .. node
    for _, room in ipairs(cjson.decode(old[3])) do
      redis.call('SREM', p .. ':room:' .. room, id)
      if redis.call('HINCRBY', nk, room, -1) <= 0 then redis.call('HDEL', nk, room) end
    end
  end
  redis.call('DEL', ck)
  redis.call('SREM', p .. ':node:' .. node, id)
  return node
end
local function wipe(node)
  local nodeset = p .. ':node:' .. node
  local ids = redis.call('SMEMBERS', nodeset)
  for _, id in ipairs(ids) do unindex(id) end
  redis.call('DEL', nodeset, p .. ':nrooms:' .. node)
  return #ids
end
local function now_ms()
  local t = redis.call('TIME')
  return string.format('%.0f', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
end
local function alive(node)
  return redis.call('EXISTS', p .. ':alive:' .. node) == 1
end
local function announce(kind, node, data)
  local seq = 0
  if kind == 'L' or kind == 'F' then
    redis.call('DEL', p .. ':seq:' .. node)
  else
    seq = redis.call('INCR', p .. ':seq:' .. node)
  end
  redis.call('PUBLISH', p .. ':presence', kind .. string.char(#node) .. node .. seq .. ':' .. data)
end
"""

#: ARGV: prefix, node, id, descriptor, has_user ("1"/"0"), user, rooms (JSON array) -> 1, or 0 if another node owns id
PUT = (
    _PRELUDE
    + """
local node, id = ARGV[2], ARGV[3]
local ck = p .. ':conn:' .. id
local owner = redis.call('HGET', ck, 'n')
if owner and owner ~= node then return 0 end
unindex(id)
redis.call('HSET', ck, 'd', ARGV[4], 'n', node, 'r', ARGV[7])
if ARGV[5] == '1' then
  redis.call('HSET', ck, 'u', ARGV[6])
  redis.call('SADD', p .. ':user:' .. ARGV[6], id)
end
redis.call('SADD', p .. ':node:' .. node, id)
local nk = p .. ':nrooms:' .. node
for _, room in ipairs(cjson.decode(ARGV[7])) do
  redis.call('SADD', p .. ':room:' .. room, id)
  redis.call('HINCRBY', nk, room, 1)
end
announce('U', node, ARGV[4])
return 1
"""
)

#: ARGV: prefix, node, id -> 1 if removed, 0 if absent or another node's
DELETE = (
    _PRELUDE
    + """
local owner = redis.call('HGET', p .. ':conn:' .. ARGV[3], 'n')
if owner ~= ARGV[2] then return 0 end
unindex(ARGV[3])
announce('X', ARGV[2], ARGV[3])
return 1
"""
)

#: ARGV: prefix, node, ttl_ms -> 1. Replaces the node's whole slice with nothing and marks it
#: alive; the caller writes its connections after it, in the same transaction.
REGISTER = (
    _PRELUDE
    + """
local node = ARGV[2]
wipe(node)
redis.call('SET', p .. ':alive:' .. node, '1', 'PX', ARGV[3])
redis.call('HSET', p .. ':nodes', node, now_ms())
announce('R', node, '')
return 1
"""
)

#: ARGV: prefix, node -> connections removed. A graceful leave: everything of the node goes.
LEAVE = (
    _PRELUDE
    + """
local node = ARGV[2]
local n = wipe(node)
redis.call('DEL', p .. ':alive:' .. node)
redis.call('HDEL', p .. ':nodes', node)
announce('L', node, '')
return n
"""
)

#: ARGV: prefix, node, ttl_ms -> 1, or 0 when the alive key was gone (the caller registers again)
BEAT = (
    _PRELUDE
    + """
local node = ARGV[2]
if redis.call('PEXPIRE', p .. ':alive:' .. node, ARGV[3]) == 0 then return 0 end
redis.call('HSET', p .. ':nodes', node, now_ms())
return 1
"""
)

#: ARGV: prefix, forget_ms -> {alive nodes, nodes forgotten now}. Nodes without an alive key
#: and no heartbeat for forget_ms lose their entries (idempotent: any node may run it).
SCAN_NODES = (
    _PRELUDE
    + """
local now = tonumber(now_ms())
local forget = tonumber(ARGV[2])
local live, gone = {}, 0
local all = redis.call('HGETALL', p .. ':nodes')
for i = 1, #all, 2 do
  local node, seen = all[i], tonumber(all[i + 1])
  if alive(node) then
    live[#live + 1] = node
  elseif (not seen) or now - seen > forget then
    wipe(node)
    redis.call('HDEL', p .. ':nodes', node)
    announce('F', node, '')
    gone = gone + 1
  end
end
return {live, gone}
"""
)

#: ARGV: prefix -> connections on live nodes
COUNT = (
    _PRELUDE
    + """
local n = 0
for _, node in ipairs(redis.call('HKEYS', p .. ':nodes')) do
  if alive(node) then n = n + redis.call('SCARD', p .. ':node:' .. node) end
end
return n
"""
)

#: ARGV: prefix -> descriptors of every connection on a live node
CONNECTIONS = (
    _PRELUDE
    + """
local out = {}
for _, node in ipairs(redis.call('HKEYS', p .. ':nodes')) do
  if alive(node) then
    for _, id in ipairs(redis.call('SMEMBERS', p .. ':node:' .. node)) do
      local d = redis.call('HGET', p .. ':conn:' .. id, 'd')
      if d then out[#out + 1] = d end
    end
  end
end
return out
"""
)

#: ARGV: prefix, index ("user"/"room"), name, limit (0: all) -> descriptors on live nodes
SELECT = (
    _PRELUDE
    + """
local limit = tonumber(ARGV[4])
local out, seen = {}, {}
for _, id in ipairs(redis.call('SMEMBERS', p .. ':' .. ARGV[2] .. ':' .. ARGV[3])) do
  local h = redis.call('HMGET', p .. ':conn:' .. id, 'n', 'd')
  local node = h[1]
  if node and h[2] then
    local a = seen[node]
    if a == nil then a = alive(node); seen[node] = a end
    if a then
      out[#out + 1] = h[2]
      if limit > 0 and #out >= limit then break end
    end
  end
end
return out
"""
)

#: ARGV: prefix -> {{node, alive (0/1), connections, {rooms}}, ...}
TOPOLOGY = (
    _PRELUDE
    + """
local out = {}
for _, node in ipairs(redis.call('HKEYS', p .. ':nodes')) do
  local a = 0
  if alive(node) then a = 1 end
  out[#out + 1] = {node, a, redis.call('SCARD', p .. ':node:' .. node), redis.call('HKEYS', p .. ':nrooms:' .. node)}
end
return out
"""
)

#: ARGV: prefix[, node] -> {{node, seq, {descriptors}}, ...}: every registered node's slice (or one)
SLICES = (
    _PRELUDE
    + """
local nodes
if #ARGV >= 2 then nodes = {ARGV[2]} else nodes = redis.call('HKEYS', p .. ':nodes') end
local out = {}
for _, node in ipairs(nodes) do
  local descs = {}
  for _, id in ipairs(redis.call('SMEMBERS', p .. ':node:' .. node)) do
    local d = redis.call('HGET', p .. ':conn:' .. id, 'd')
    if d then descs[#descs + 1] = d end
  end
  local seq = redis.call('GET', p .. ':seq:' .. node)
  if seq == false then seq = 0 else seq = tonumber(seq) end
  if redis.call('HEXISTS', p .. ':nodes', node) == 1 or #descs > 0 then
    out[#out + 1] = {node, seq, descs}
  end
end
return out
"""
)

ALL: dict[str, str] = {
    "put": PUT,
    "delete": DELETE,
    "register": REGISTER,
    "leave": LEAVE,
    "beat": BEAT,
    "scan_nodes": SCAN_NODES,
    "count": COUNT,
    "connections": CONNECTIONS,
    "select": SELECT,
    "topology": TOPOLOGY,
    "slices": SLICES,
}

#: name -> SHA1 of the script (what EVALSHA takes)
SHAS: dict[str, str] = {name: hashlib.sha1(src.encode()).hexdigest() for name, src in ALL.items()}
