-- A channel's epoch, last offset and up to `limit` history entries,
-- ascending: those after `since`, or the latest when `since` is ''.
-- A channel read before its first message gets its epoch here, so the
-- epoch a subscriber sees stays the same once messages arrive.
--
-- ARGV: prefix, channel, epoch for a new channel, since, limit.
local prefix, channel, new_epoch, since = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local limit = tonumber(ARGV[5])
local meta = prefix .. ':meta:' .. channel
local history = prefix .. ':history:' .. channel
redis.call('HSETNX', meta, 'epoch', new_epoch)
local state = redis.call('HMGET', meta, 'epoch', 'offset')
local result = { state[1], state[2] or '0' }
if limit > 0 then
  local entries
  if since == '' then
    entries = redis.call('ZRANGE', history, 0, limit - 1, 'REV')
    for i = #entries, 1, -1 do
      result[#result + 1] = entries[i]
    end
  else
    entries = redis.call('ZRANGE', history, '(' .. since, '+inf', 'BYSCORE', 'LIMIT', 0, limit)
    for i = 1, #entries do
      result[#result + 1] = entries[i]
    end
  end
end
return result
