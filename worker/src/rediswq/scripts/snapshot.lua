#!lua flags=no-writes
-- A consistent read of the queue, for `rediswq status` and a starting worker; a script rather
-- than MULTI because Redis 7.0 refuses MULTI while over maxmemory, when an operator needs this
-- most, and a no-writes script runs then (and on a replica).
-- ARGV: what to read ("1": everything `status` shows; "0": only the counts; "check": the counts
-- and the seal, once every key of the queue is found of its type, or absent, as a starting worker
-- and a seed ask: one round trip on the client's own connection).
-- Returns {pending, in flight, delayed}; "check" adds {..., sealed (0/1)}; "1" adds {..., leases
-- as a flat hash, deadlines as id/score pairs, stats as a flat hash, sealed (0/1), server time
-- as {seconds, microseconds}}.
if ARGV[1] == 'check' then
  check(unpack(KEYS, 1, OWN - 1))
end
local reply = {redis.call('LLEN', pending), redis.call('ZCARD', deadlines),
  redis.call('ZCARD', delayed)}
if ARGV[1] == 'check' then
  reply[4] = redis.call('EXISTS', sealed)
elseif ARGV[1] == '1' then
  reply[4] = redis.call('HGETALL', leases)
  reply[5] = redis.call('ZRANGE', deadlines, 0, -1, 'WITHSCORES')
  reply[6] = redis.call('HGETALL', stats)
  reply[7] = redis.call('EXISTS', sealed)
  reply[8] = redis.call('TIME')
end
return reply
