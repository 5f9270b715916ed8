#!lua
-- A failed attempt: the item goes back now, waits for its retry, or becomes a dead letter whose
-- record says why.
-- ARGV: owner, request (see queue.py), max_attempts, lease id, delay_ms (0: back at once),
-- permanent ("1": no retry), record (a JSON object: the error and the worker; this adds the
-- attempts and the time).
-- Returns 0 put back, 1 dead-lettered, 2 delayed, -1 not held (the lease was lost). Run twice
-- (a retry after a lost reply), the second run answers what the first did.
local owner, request, max_attempts, id = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local delay_ms, permanent = tonumber(ARGV[5]), ARGV[6] == '1'
local ok, info = pcall(cjson.decode, ARGV[7])
if not ok or type(info) ~= 'table' then
  return redis.error_reply('ERR the dead-letter record is not a JSON object')
end
check(pending, leases, deadlines, retries, failed, stats, delayed, failures, replies, history)
local memory = replayed(owner, request)
if memory then
  return tonumber(memory)
end
local record = owned(owner, id)
if not record then
  return -1
end
forget(id)
local _, attempt, item = parse(record)
local now = now_ms()
local reason = type(info.error) == 'string' and string.sub(info.error, 1, 200) or ''
if permanent or attempt >= max_attempts then
  info.attempts = attempt
  info.time = now / 1000
  redis.call('RPUSH', failed, item)
  redis.call('HSET', failures, item, cjson.encode(info))
  redis.call('HINCRBY', stats, 'failed', 1)
  log_attempt(item, attempt, 'failed, dead-lettered: ' .. reason, owner)
  remember(owner, request, 1)
  return 1
end
redis.call('HINCRBY', stats, 'retried', 1)
log_attempt(item, attempt, 'failed: ' .. reason, owner)
if delay_ms > 0 then
  redis.call('ZADD', delayed, now + delay_ms, id .. '\n' .. attempt .. '\n' .. item)
  remember(owner, request, 2)
  return 2
end
put_back(item, attempt, max_attempts)
remember(owner, request, 0)
return 0
