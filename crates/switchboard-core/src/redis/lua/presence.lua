-- Presence across nodes. A node's entries ("channel\nuser") are in its
-- index set; a channel's hash counts, per user, the nodes they are on, so a
-- user is announced ('j'/'l' on the channel's topic) on their first node in
-- and their last node out.
--
-- ARGV: prefix, node, command, then per command:
--   change: op ('j' or 'l'), channel, user, repeated
--   sync: channel, user, repeated: the node's whole presence, replacing what
--         its index held (after an error or losing its registration)
-- Returns the number of entries changed.
local prefix, node, command = ARGV[1], ARGV[2], ARGV[3]
local index = prefix .. ':node:' .. node
local changed = 0

local function topic(channel)
  return prefix .. ':ch:' .. channel
end

local function arrive(channel, user)
  if redis.call('SADD', index, channel .. '\n' .. user) == 1 then
    changed = changed + 1
    if redis.call('HINCRBY', prefix .. ':presence:' .. channel, user, 1) == 1 then
      redis.call('PUBLISH', topic(channel), 'j' .. user)
    end
  end
end

local function depart(channel, user)
  if redis.call('SREM', index, channel .. '\n' .. user) == 1 then
    changed = changed + 1
    local presence = prefix .. ':presence:' .. channel
    if redis.call('HINCRBY', presence, user, -1) <= 0 then
      redis.call('HDEL', presence, user)
      redis.call('PUBLISH', topic(channel), 'l' .. user)
    end
  end
end

if command == 'change' then
  for i = 4, #ARGV, 3 do
    if ARGV[i] == 'j' then
      arrive(ARGV[i + 1], ARGV[i + 2])
    else
      depart(ARGV[i + 1], ARGV[i + 2])
    end
  end
elseif command == 'sync' then
  local wanted = {}
  for i = 4, #ARGV, 2 do
    wanted[ARGV[i] .. '\n' .. ARGV[i + 1]] = true
  end
  for _, entry in ipairs(redis.call('SMEMBERS', index)) do
    if not wanted[entry] then
      local channel, user = string.match(entry, '^([^\n]*)\n(.*)$')
      depart(channel, user)
    end
  end
  for i = 4, #ARGV, 2 do
    arrive(ARGV[i], ARGV[i + 1])
  end
end
return changed
