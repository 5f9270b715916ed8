-- Complete leases, only for their current holder.
-- ARGV: owner, then lease ids. Returns 1 per id that was still held by owner, else 0.
local reply = {}
for i = 2, #ARGV do
  reply[#reply + 1] = complete(ARGV[1], ARGV[i])
end
return reply
