#!lua flags=allow-oom
-- Give held leases back to the head of the queue, in the order they were leased.
-- ARGV: owner, request (see queue.py), max_attempts, charge ("1": the attempt failed and counts;
-- "0": it never ran), then lease ids. Returns per id: 0 put back, 1 dead-lettered, -1 not held
-- (lease was lost).
-- Allowed over maxmemory: like lease.lua, it moves items back and adds none but an entry
-- per lease to the capped history.
local owner, request = ARGV[1], ARGV[2]
local max_attempts, charge = tonumber(ARGV[3]), ARGV[4] == '1'
check(pending, leases, deadlines, retries, failed, stats, replies, history)
local memory = replayed(owner, request)
if memory then
  return split(memory)
end
local reply = {}
for i = #ARGV, 5, -1 do
  local record = owned(owner, ARGV[i])
  local outcome = -1
  if record then
    forget(ARGV[i])
    local _, attempt, item = parse(record)
    if charge then
      outcome = put_back(item, attempt, max_attempts)
      redis.call('HINCRBY', stats, 'retried', 1 - outcome)
      log_attempt(item, attempt, outcome == 1 and 'failed, dead-lettered' or 'failed', owner)
    else
      outcome = put_back(item, attempt - 1, max_attempts)
      redis.call('HINCRBY', stats, 'released', 1)
      log_attempt(item, attempt, 'released', owner)
    end
  end
  reply[i - 4] = outcome
end
remember(owner, request, joined(reply))
return reply
