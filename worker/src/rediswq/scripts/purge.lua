#!lua flags=allow-oom
-- Drop every dead letter and its record.
-- ARGV: owner, request (see queue.py). Returns how many dead letters there were. Run twice (a
-- retry after a lost reply), the second run answers what the first did.
-- Allowed over maxmemory: it frees memory; the reply it remembers is a few bytes.
local owner, request = ARGV[1], ARGV[2]
check(failed, failures, replies)
local memory = replayed(owner, request)
if memory then
  return tonumber(memory)
end
local count = redis.call('LLEN', failed)
redis.call('DEL', failed, failures)
remember(owner, request, count)
return count
