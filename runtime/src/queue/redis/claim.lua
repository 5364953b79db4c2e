-- Take up to ARGV[3] pending jobs under leases expiring at ARGV[4], after
-- promoting due and expired jobs. Returns their records.
promote()
local max = tonumber(ARGV[3])
local out = {}
if max > 0 then
  local popped = redis.call('ZPOPMIN', K_PENDING, max)
  for i = 1, #popped, 2 do
    local m = popped[i]
    local seq = seq_of(m)
    local jk = jobkey(seq)
    local attempts = redis.call('HINCRBY', jk, 'attempts', 1)
    redis.call('HINCRBY', jk, 'token', 1)
    redis.call('HSET', jk, 'state', 'running', 'lease_expires', ARGV[4])
    redis.call('RPUSH', histkey(seq), attempts .. '|' .. NOW_S .. '||')
    redis.call('ZADD', K_RUNNING, ARGV[4], m)
    out[#out + 1] = record(seq)
  end
  if redis.call('ZCARD', K_PENDING) > 0 then wake() end
end
return out
