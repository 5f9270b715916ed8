-- Push the deadlines of leases still held by owner to now + lease_ms.
-- ARGV: owner, lease_ms, then lease ids. Returns 1 per id still held, else 0.
local owner, lease_ms = ARGV[1], tonumber(ARGV[2])
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
