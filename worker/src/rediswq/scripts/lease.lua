-- One step of a worker: hand in finished leases, reclaim expired ones, lease up to `count` items.
-- ARGV: owner, lease_ms, count, max_attempts, require_seal ("1": any seal, "0": none needed,
-- "=<run>": the seal of that run, see runs.py), reclaim ("1": put expired leases back first;
-- callers ask now and then, not every step), then the ids to complete.
-- Returns {state, a completed flag per handed-in id, then id, attempt, item per new lease}, where
-- state is "leased", "pending" (count was 0), "wait" (nothing pending, but leases are out or
-- failed items wait for their retry),
-- "unsealed" (nothing pending, nothing out, not sealed yet; for a run: no seal at all),
-- "other-run" (sealed for another run than the caller's: lease nothing) or "drained".
local owner, lease_ms, count = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local max_attempts, require_seal = tonumber(ARGV[4]), ARGV[5] ~= '0'
local run = string.match(ARGV[5], '^=(.+)$')

local reply = complete_from(owner, 7)
table.insert(reply, 1, '')

local now = now_ms()
if ARGV[6] == '1' then
  reclaim(now, max_attempts, 100)
  promote(now, 100)
end

if run then
  local sealed_for = redis.call('GET', sealed)
  if sealed_for ~= run then
    reply[1] = sealed_for and 'other-run' or 'unsealed'
    return reply
  end
end

local items = count > 0 and redis.call('LPOP', pending, count)
if items then
  -- Batched writes: a prefetch of k items costs a handful of calls, not a few per item.
  local first_id = redis.call('INCRBY', seq, #items) - #items
  local retried = redis.call('EXISTS', retries) == 1
  local prefix, deadline = owner .. '\n', now + lease_ms
  local records, deadline_args, r = {}, {}, #reply
  for i, item in ipairs(items) do
    local id = first_id + i
    local attempt = (retried and pop_attempts(item) or 0) + 1
    records[2 * i - 1] = id
    records[2 * i] = prefix .. attempt .. '\n' .. item
    deadline_args[2 * i - 1] = deadline
    deadline_args[2 * i] = id
    reply[r + 1], reply[r + 2], reply[r + 3] = id, attempt, item
    r = r + 3
  end
  redis.call('HSET', leases, unpack(records))
  redis.call('ZADD', deadlines, unpack(deadline_args))
  reply[1] = 'leased'
elseif redis.call('LLEN', pending) > 0 then
  reply[1] = 'pending'
elseif redis.call('ZCARD', deadlines) > 0 or redis.call('EXISTS', delayed) == 1 then
  reply[1] = 'wait'
elseif require_seal and redis.call('EXISTS', sealed) == 0 then
  reply[1] = 'unsealed'
else
  reply[1] = 'drained'
  redis.call('PUBLISH', events, 'drained')
end
return reply
