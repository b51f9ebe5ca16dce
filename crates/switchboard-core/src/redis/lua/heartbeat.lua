-- A node's heartbeat: renews its lease and removes every node whose lease
-- ran out, with its presence (announcing the leaves), so a node that dies
-- drops out of presence without anyone's help.
--
-- ARGV: prefix, node, lease (ms).
-- Returns 1 if the node was registered, 0 if not (its first beat, or it
-- was taken for dead, or Redis lost its data): the node then syncs its
-- presence.
local prefix, node, lease = ARGV[1], ARGV[2], tonumber(ARGV[3])
local nodes = prefix .. ':nodes'
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local known = redis.call('ZSCORE', nodes, node)
redis.call('ZADD', nodes, now + lease, node)
for _, dead in ipairs(redis.call('ZRANGE', nodes, '-inf', '(' .. now, 'BYSCORE')) do
  local index = prefix .. ':node:' .. dead
  for _, entry in ipairs(redis.call('SMEMBERS', index)) do
    local channel, user = string.match(entry, '^([^\n]*)\n(.*)$')
    local presence = prefix .. ':presence:' .. channel
    if redis.call('HINCRBY', presence, user, -1) <= 0 then
      redis.call('HDEL', presence, user)
      redis.call('PUBLISH', prefix .. ':ch:' .. channel, 'l' .. user)
    end
  end
  redis.call('DEL', index)
  redis.call('ZREM', nodes, dead)
end
if known then
  return 1
end
return 0
