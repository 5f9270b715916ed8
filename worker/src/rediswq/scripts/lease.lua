-- One step of a worker: hand in finished leases, reclaim expired ones, lease up to `count` items.
-- ARGV: owner, lease_ms, count, max_attempts, require_seal ("1"/"0"), then the ids to complete.
-- Returns {state, a completed flag per handed-in id, then id, attempt, item per new lease}, where
-- state is "leased", "pending" (count was 0), "wait" (nothing pending, but leases are out),
-- "unsealed" (nothing pending, nothing out, not sealed yet) or "drained".
local owner, lease_ms, count = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local max_attempts, require_seal = tonumber(ARGV[4]), ARGV[5] == '1'

local reply = {''}
for i = 6, #ARGV do
  reply[#reply + 1] = complete(owner, ARGV[i])
end

local now = now_ms()
reclaim(now, max_attempts, 100)

local items = count > 0 and redis.call('LPOP', pending, count)
if items then
  for _, item in ipairs(items) do
    local id = redis.call('INCR', seq)
    local attempt = pop_attempts(item) + 1
    redis.call('HSET', leases, id, owner .. '\n' .. attempt .. '\n' .. item)
    redis.call('ZADD', deadlines, now + lease_ms, id)
    reply[#reply + 1] = id
    reply[#reply + 1] = attempt
    reply[#reply + 1] = item
  end
  reply[1] = 'leased'
elseif redis.call('LLEN', pending) > 0 then
  reply[1] = 'pending'
elseif redis.call('ZCARD', deadlines) > 0 then
  reply[1] = 'wait'
elseif require_seal and redis.call('EXISTS', sealed) == 0 then
  reply[1] = 'unsealed'
else
  reply[1] = 'drained'
end
return reply
