#!lua flags=allow-oom
-- Drop dead letters and their records: every one, or the named ones.
-- ARGV: owner, request (see queue.py), all ("1": every dead letter), then the items to drop (one
-- copy each time an item is named). Returns {"purged", n}, or {"missing", items...} and changes
-- nothing if a named item is not (or not that often) among the dead letters. Run twice (a retry
-- after a lost reply), the second run answers what the first did.
-- Allowed over maxmemory: it frees memory; the reply it remembers is a few bytes.
local owner, request = ARGV[1], ARGV[2]
check(failed, failures, stats, replies)
local memory = replayed(owner, request)
if memory then
  return {'purged', tonumber(memory)}
end
local count
if ARGV[3] == '1' then
  count = redis.call('LLEN', failed)
  redis.call('DEL', failed, failures)
else
  local missing = missing_dead_letters(4)
  if missing then
    return missing
  end
  count = drop_dead_letters(4)
end
-- The status counts dead letters as finished and failed; dropped, they are neither any more.
if count > 0 then
  redis.call('HINCRBY', stats, 'failed', text(-count))
end
remember(owner, request, count)
return {'purged', count}
