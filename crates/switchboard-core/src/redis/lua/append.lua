-- Appends a group commit's messages in one step: for each, the channel's
-- next offset, its history entry (trimmed to the newest max_count) and its
-- idempotency key; for each run of one channel's messages, one PUBLISH to
-- the nodes listening for it. Atomic, so every node sees one order.
--
-- ARGV: prefix, epoch for a new channel, max_count, key ttl (ms), then five
-- per message: channel, username, msg, time (ms), idempotency key ('' if none).
-- Returns three integers per message: offset, time, 1 if a repeated key.
local prefix, new_epoch = ARGV[1], ARGV[2]
local max_count, key_ttl = tonumber(ARGV[3]), ARGV[4]
local result = {}
local run_channel, run = nil, {}

-- One announcement per run: 'm' then each entry as "<bytes>:<entry>".
local function announce()
  if run_channel and #run > 0 then
    redis.call('PUBLISH', prefix .. ':ch:' .. run_channel, 'm' .. table.concat(run))
  end
  run = {}
end

for i = 5, #ARGV, 5 do
  local channel, user, msg, time, key = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local key_name, first = nil, nil
  if key ~= '' then
    -- Lengths first: channel, user and key may contain any separator.
    key_name = prefix .. ':key:' .. #channel .. ':' .. channel .. #user .. ':' .. user .. key
    first = redis.call('GET', key_name)
  end
  if first then
    local offset, at = string.match(first, '^(%d+) (%d+)$')
    result[#result + 1] = tonumber(offset)
    result[#result + 1] = tonumber(at)
    result[#result + 1] = 1
  else
    local meta = prefix .. ':meta:' .. channel
    local history = prefix .. ':history:' .. channel
    redis.call('HSETNX', meta, 'epoch', new_epoch)
    local offset = redis.call('HINCRBY', meta, 'offset', 1)
    local entry = offset .. '\n' .. time .. '\n' .. user .. '\n' .. msg
    redis.call('ZADD', history, offset, entry)
    redis.call('ZREMRANGEBYRANK', history, 0, -max_count - 1)
    redis.call('SADD', prefix .. ':channels', channel)
    if key_name then
      redis.call('SET', key_name, offset .. ' ' .. time, 'PX', key_ttl)
    end
    if channel ~= run_channel then
      announce()
      run_channel = channel
    end
    run[#run + 1] = #entry .. ':' .. entry
    result[#result + 1] = offset
    result[#result + 1] = tonumber(time)
    result[#result + 1] = 0
  end
end
announce()
return result
