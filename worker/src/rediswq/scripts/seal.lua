-- Publish the staged items and seal the queue in one step, so no worker ever sees a sealed,
-- half-filled queue. KEYS[9] is the staging list. ARGV: reset ("1" clears the queue first).
-- Returns the number of items published, or -1 if the queue was already sealed (nothing changes).
local staging = KEYS[9]
if ARGV[1] == '1' then
  redis.call('DEL', pending, leases, deadlines, retries, failed, stats, sealed, seq)
end
if redis.call('EXISTS', sealed) == 1 then
  redis.call('DEL', staging)
  return -1
end
local kind = redis.call('TYPE', pending).ok
if kind ~= 'none' and kind ~= 'list' then
  return redis.error_reply('WRONGTYPE queue key holds a ' .. kind .. ', not a list')
end
local n = redis.call('LLEN', staging)
if kind == 'none' and n > 0 then
  redis.call('RENAME', staging, pending)
  redis.call('PERSIST', pending) -- RENAME keeps the staging list's safety TTL
else
  -- Items pushed by hand before the seed stay ahead of the seeded ones.
  for start = 0, n - 1, 1000 do
    redis.call('RPUSH', pending, unpack(redis.call('LRANGE', staging, start, start + 999)))
  end
  redis.call('DEL', staging)
end
redis.call('SET', sealed, now_ms())
redis.call('PUBLISH', events, 'sealed')
return n
