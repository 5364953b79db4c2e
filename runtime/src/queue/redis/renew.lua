-- Extend leases: ARGV[3..] in groups of three (seq, token, new expiry ms).
-- Returns 1 per renewed lease, 0 where it is no longer current.
local out = {}
for i = 3, #ARGV, 3 do
  local seq, token, expires = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local st = redis.call('HMGET', jobkey(seq), 'state', 'token')
  if st[1] == 'running' and st[2] == token then
    redis.call('HSET', jobkey(seq), 'lease_expires', expires)
    redis.call('ZADD', K_RUNNING, expires, member(seq))
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
