#!lua flags=allow-oom
-- Push the deadlines of leases still held by owner to now + lease_ms.
-- ARGV: owner, lease_ms, then lease ids. Returns 1 per id still held, else 0.
-- Safe to run twice (the second run only moves the deadlines on), so it needs no request id.
-- Allowed over maxmemory: it only changes existing scores, and a worker that cannot renew
-- would lose the leases it is working on.
local owner, lease_ms = ARGV[1], tonumber(ARGV[2])
check(leases, deadlines)
local deadline = now_ms() + lease_ms
local reply = {}
for i = 3, #ARGV do
  if owned(owner, ARGV[i]) then
    redis.call('ZADD', deadlines, 'XX', deadline, ARGV[i])
    reply[#reply + 1] = 1
  else
    reply[#reply + 1] = 0
  end
end
return reply
