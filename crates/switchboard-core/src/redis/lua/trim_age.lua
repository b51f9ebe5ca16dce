-- Drops a channel's entries older than a cutoff, oldest first (offsets
-- ascend with time, so the first newer entry ends the scan).
--
-- ARGV: prefix, channel, cutoff (ms since the Unix epoch).
-- Returns how many entries went.
local history = ARGV[1] .. ':history:' .. ARGV[2]
local cutoff = tonumber(ARGV[3])
local removed = 0
while true do
  local entries = redis.call('ZRANGE', history, 0, 99)
  local old = 0
  for i = 1, #entries do
    local time = tonumber(string.match(entries[i], '^%d+\n(%d+)\n'))
    if time >= cutoff then
      break
    end
    old = i
  end
  if old == 0 then
    return removed
  end
  redis.call('ZREMRANGEBYRANK', history, 0, old - 1)
  removed = removed + old
  if old < #entries or #entries < 100 then
    return removed
  end
end
