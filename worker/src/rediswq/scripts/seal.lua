#!lua
-- Publish a seed's staged items and seal the queue for its run, in one step, so no worker ever
-- sees a sealed, half-filled queue.
-- KEYS after the queue's (see keys.py): the staging list; the list of ended runs; this run's
-- record, remainder and its attempt counts; the record of the run the caller read as current
-- (this run's if none) and its six parts (keys.py, run_keys); then records of ended runs, to drop
-- from the list those that expired. Every key it touches is one of these.
-- ARGV: reset ("1" drops the current run first), run id, token (one per seed), expected (how
-- many items the seed staged; 0: only tell whether the queue is sealed for the run),
-- keep_seconds (how long an ended run's record stays), the current run as the caller read it
-- ("" for none), then the ids of the ended runs whose records follow in KEYS.
-- Returns {outcome, field, value, ...}: outcome "sealed" or "unchanged" (the queue was already
-- sealed for this run), then the run's record (see runs.py); or, changing nothing, {"moved",
-- current} (sealed for another run than the caller read: call again naming it), or {"other"}
-- (expected 0, and the queue is not sealed for this run).
--
-- Safe to run twice: the record keeps the token of the seed that made the run, and a replay
-- (redis-py re-sends a script whose reply was lost) returns the record again, changing nothing.
local staging, runs, earlier, earlier_pending, earlier_retries = unpack(KEYS, OWN, OWN + 4)
local old, old_pending, old_retries, old_stats, old_failed, old_failures, old_results =
  unpack(KEYS, OWN + 5, OWN + 11)
local first_ended = OWN + 12
local reset, run, token = ARGV[1] == '1', ARGV[2], ARGV[3]
local expected, keep, read = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]

check(sealed)
local current = redis.call('GET', sealed)
-- Every check before the first write, the run keys' types too.
kind_of[runs], kind_of[earlier], kind_of[old], kind_of[earlier_pending] =
  'zset', 'hash', 'hash', 'list'
check(pending, leases, deadlines, retries, failed, stats, delayed, runs, earlier, old,
  earlier_pending)
-- A replay finds the record of its run with its token, whatever seeds came since. Writing the
-- token again changes nothing, but it is a write of this connection, which the seed's WAIT
-- then waits for the replicas to hold (a WAIT after no write returns at once): the replicas
-- hold the seal too once they hold it.
if redis.call('HGET', earlier, 'token') == token then
  redis.call('HSET', earlier, 'token', token)
  return {'sealed', unpack(redis.call('HGETALL', earlier))}
end
if (current or '') ~= read then
  return {'moved', current or ''}
end
local staged = redis.call('LLEN', staging)
if staged ~= expected then
  return redis.error_reply('STAGING ' .. staged .. ' of the ' .. expected .. ' staged items are in Redis')
end
if current == run and not reset then
  redis.call('DEL', staging)
  -- As for a replay: a seed that finds its run sealed (the retry of one whose WAIT timed out)
  -- writes, so that its WAIT waits for the replicas to hold the seal.
  redis.call('SET', sealed, run)
  return {'unchanged', unpack(redis.call('HGETALL', earlier))}
end
if expected == 0 then
  return {'other'}
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
    redis.call('DEL', old)
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
    redis.call('RENAME', pending, old_pending)
    if redis.call('EXISTS', retries) == 1 then
      redis.call('RENAME', retries, old_retries)
    end
  end
  for _, kept in ipairs({{stats, old_stats}, {failed, old_failed}, {failures, old_failures},
      {results, old_results}}) do
    if redis.call('EXISTS', kept[1]) == 1 then
      redis.call('RENAME', kept[1], kept[2])
      redis.call('EXPIRE', kept[2], keep)
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
note('dropped_remainder', redis.call('LLEN', earlier_pending))
redis.call('DEL', earlier, earlier_pending, earlier_retries)
redis.call('ZREM', runs, run)
for i = 7, #ARGV do
  if redis.call('EXISTS', KEYS[first_ended + i - 7]) == 0 then
    redis.call('ZREM', runs, ARGV[i]) -- its record expired
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
