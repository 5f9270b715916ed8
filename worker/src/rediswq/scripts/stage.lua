#!lua
-- Append one batch of a seed to its staging list, once. The last key is the staging list.
-- ARGV: offset (how many items the seed staged before this batch), ttl_seconds, then the items.
-- A replay of a batch that is already there (redis-py re-sends a pipeline whose reply was lost)
-- changes nothing. Returns the list's length, or an error when items staged before are missing.
local staging, offset = KEYS[#KEYS], tonumber(ARGV[1])
local have = redis.call('LLEN', staging)
if have == offset then
  redis.call('RPUSH', staging, unpack(ARGV, 3))
  redis.call('EXPIRE', staging, ARGV[2])
  return have + #ARGV - 2
elseif have >= offset + #ARGV - 2 then
  return have
end
return redis.error_reply('STAGING ' .. have .. ' of the ' .. offset .. ' items staged so far are in Redis')
