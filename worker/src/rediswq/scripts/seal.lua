#!lua
-- Publish a seed's staged items and seal the queue for its run, in one step, so no worker ever
-- sees a sealed, half-filled queue. The last key is the staging list.
-- ARGV: reset ("1" drops the current run first), run id, token (one per seed), expected (how
-- many items the seed staged), keep_seconds (how long an ended run's record stays).
-- Returns {outcome, field, value, ...}: outcome "sealed" or "unchanged" (the queue was already
-- sealed for this run), then the run's record (see runs.py).
--
-- Safe to run twice: the record keeps the token of the seed that made the run, and a replay
-- (redis-py re-sends a script whose reply was lost) returns the record again, changing nothing.
local staging = KEYS[#KEYS]
local reset, run, token = ARGV[1] == '1', ARGV[2], ARGV[3]
local expected, keep = tonumber(ARGV[4]), tonumber(ARGV[5])
local runs = prefix .. ':runs'
local function record_of(id)
  return prefix .. ':run:' .. id
end

check(sealed)
local current = redis.call('GET', sealed)
-- Every check before the first write, the run keys' types too.
local earlier = record_of(run)
local old = current and record_of(current) or earlier
kind_of[runs], kind_of[earlier], kind_of[old], kind_of[earlier .. ':pending'] =
  'zset', 'hash', 'hash', 'list'
check(pending, leases, deadlines, retries, failed, stats, delayed, runs, earlier, old,
  earlier .. ':pending')
-- A replay finds its run sealed, or ended by one seed that came in between.
if current then
  local before = redis.call('HGET', old, 'previous')
  for _, record in ipairs({old, before and before ~= '' and record_of(before) or old}) do
    if redis.call('HGET', record, 'token') == token then
      return {'sealed', unpack(redis.call('HGETALL', record))}
    end
  end
end
local staged = redis.call('LLEN', staging)
if staged ~= expected then
  return redis.error_reply('STAGING ' .. staged .. ' of the ' .. expected .. ' staged items are in Redis')
end
if current == run and not reset then
  redis.call('DEL', staging)
  return {'unchanged', unpack(redis.call('HGETALL', record_of(run)))}
end

-- Items waiting for a retry are part of what is left: back in the list, as for a shutdown.
promote(math.huge, -1)

local now = now_ms()
local record = {'id', run, 'token', token, 'queued', expected, 'sealed_at', now}
local function note(field, value)
  local n = #record
  record[n + 1], record[n + 2] = field, value
end

if reset then
  note('dropped_pending', redis.call('LLEN', pending))
  note('dropped_leased', redis.call('HLEN', leases))
  note('dropped_failed', redis.call('LLEN', failed))
  note('dropped_done', redis.call('HGET', stats, 'done') or 0)
  note('dropped_run', current or '')
  redis.call('DEL', pending, leases, deadlines, retries, failed, stats, sealed, seq, failures,
    results, replies)
  if current then
    redis.call('DEL', record_of(current))
  end
elseif current then
  -- The current run ends: what it left undone is moved aside intact, and its counters and
  -- dead letters are kept, all under its own keys, so the new run starts clean.
  local moved = 0
  if redis.call('LLEN', pending) > 0 or redis.call('HLEN', leases) > 0 then
    -- Leased items go back to the head first, as on a shutdown: the cut attempt is not charged.
    local ids = redis.call('ZRANGE', deadlines, 0, -1)
    for i = #ids, 1, -1 do
      local held = redis.call('HGET', leases, ids[i])
      if held then
        local _, attempt, item = parse(held)
        redis.call('LPUSH', pending, item)
        push_attempts(item, attempt - 1)
      end
    end
    redis.call('DEL', leases, deadlines)
    moved = redis.call('LLEN', pending)
    redis.call('RENAME', pending, old .. ':pending')
    if redis.call('EXISTS', retries) == 1 then
      redis.call('RENAME', retries, old .. ':retries')
    end
  end
  for _, suffix in ipairs({':stats', ':failed', ':failed:info', ':results'}) do
    local key = prefix .. suffix
    if redis.call('EXISTS', key) == 1 then
      redis.call('RENAME', key, old .. suffix)
      redis.call('EXPIRE', old .. suffix, keep)
    end
  end
  redis.call('HSET', old, 'id', current, 'ended_at', now, 'next', run, 'moved', moved,
    'ended', moved > 0 and 'superseded' or 'drained')
  if moved > 0 then
    redis.call('PERSIST', old) -- kept with its remainder, until restored
  else
    redis.call('EXPIRE', old, keep)
  end
  redis.call('ZADD', runs, now, current)
  -- The replay memory of the run's sessions (queue.py): those that ended cleanly dropped their
  -- own; what is left is of workers killed or cut off, which send no more requests for it.
  redis.call('DEL', replies)
  note('previous', current)
  note('previous_moved', moved) -- 'moved' is set when this run ends in turn
end

-- Run `run` starts afresh: an earlier run of the same id (a reverted commit) is history now.
-- Its remainder, if any, is dropped: every one of its items is queued again by this seed.
note('dropped_remainder', redis.call('LLEN', earlier .. ':pending'))
redis.call('DEL', earlier, earlier .. ':pending', earlier .. ':retries')
redis.call('ZREM', runs, run)
for _, id in ipairs(redis.call('ZRANGE', runs, 0, -1)) do
  if redis.call('EXISTS', record_of(id)) == 0 then
    redis.call('ZREM', runs, id) -- its record expired
  end
end

if redis.call('EXISTS', pending) == 0 then
  redis.call('RENAME', staging, pending)
  redis.call('PERSIST', pending) -- RENAME keeps the staging list's safety TTL
else
  -- Items pushed by hand before the seed stay ahead of the seeded ones.
  for start = 0, staged - 1, 1000 do
    redis.call('RPUSH', pending, unpack(redis.call('LRANGE', staging, start, start + 999)))
  end
  redis.call('DEL', staging)
end
redis.call('SET', sealed, run)
redis.call('HSET', earlier, unpack(record))
notify('sealed')
return {'sealed', unpack(redis.call('HGETALL', earlier))}
