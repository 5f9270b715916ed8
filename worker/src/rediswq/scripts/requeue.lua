#!lua
-- Dead letters back to the head of the queue, with fresh attempts.
-- ARGV: owner, request (see queue.py), all ("1": every dead letter), then the items to requeue
-- (one copy each time an item is named). Returns {"requeued", n}, or {"missing", items...} and
-- changes nothing if a named item is not (or not that often) among the dead letters. Run twice
-- (a retry after a lost reply), the second run answers what the first did.
local owner, request = ARGV[1], ARGV[2]
check(pending, retries, failed, stats, failures, replies)
local memory = replayed(owner, request)
if memory then
  return {'requeued', tonumber(memory)}
end
local items
if ARGV[3] == '1' then
  items = redis.call('LRANGE', failed, 0, -1)
  redis.call('DEL', failed, failures)
else
  local missing = missing_dead_letters(4)
  if missing then
    return missing
  end
  drop_dead_letters(4)
  items = {unpack(ARGV, 4)}
end
-- The status counts dead letters as finished; these are not any more. Not with 0: Lua writes
-- -0 as "-0", which Redis 7.0 refuses as an increment (Valkey takes it).
if #items > 0 then
  redis.call('HINCRBY', stats, 'failed', text(-#items))
end
for i = #items, 1, -1 do
  put_back(items[i], 0, math.huge)
end
remember(owner, request, #items)
return {'requeued', #items}
