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
  items = {unpack(ARGV, 4)}
  local wanted, missing = {}, {'missing'}
  for _, item in ipairs(items) do
    wanted[item] = (wanted[item] or 0) + 1
  end
  for item, n in pairs(wanted) do
    if #redis.call('LPOS', failed, item, 'COUNT', n) < n then
      missing[#missing + 1] = item
    end
  end
  if #missing > 1 then
    return missing
  end
  for _, item in ipairs(items) do
    redis.call('LREM', failed, 1, item)
  end
  for item in pairs(wanted) do
    if not redis.call('LPOS', failed, item) then
      redis.call('HDEL', failures, item)
    end
  end
end
-- The status counts dead letters as finished; these are not any more. Lua writes -#items of no
-- items as "-0", which HINCRBY refuses as not an integer.
if #items > 0 then
  redis.call('HINCRBY', stats, 'failed', -#items)
end
for i = #items, 1, -1 do
  put_back(items[i], 0, math.huge)
end
remember(owner, request, #items)
return {'requeued', #items}
