-- Take up to ARGV[3] pending jobs under leases expiring at ARGV[4], after
-- promoting due and expired jobs. Returns their records.
--
-- Per job: one read (HGETALL, patched here to the values it is given), one
-- write of the claim's fields, the attempt entry and the running entry; the
-- attempt list is read back only when it holds earlier attempts.
promote()
local max = tonumber(ARGV[3])
local expires = ARGV[4]
local out = {}
if max > 0 then
  local popped = redis.call('ZPOPMIN', K_PENDING, max)
  for i = 1, #popped, 2 do
    local m = popped[i]
    local seq = seq_of(m)
    local jk = jobkey(seq)
    local fields = redis.call('HGETALL', jk)
    -- A member without its record (never written by these scripts) is
    -- dropped rather than run.
    if #fields > 0 then
      local attempts, token, leased = 1, 1, false
      for f = 1, #fields, 2 do
        local name = fields[f]
        if name == 'attempts' then
          attempts = tonumber(fields[f + 1]) + 1
          fields[f + 1] = tostring(attempts)
        elseif name == 'token' then
          token = tonumber(fields[f + 1]) + 1
          fields[f + 1] = tostring(token)
        elseif name == 'state' then
          fields[f + 1] = 'running'
        elseif name == 'lease_expires' then
          fields[f + 1] = expires
          leased = true
        end
      end
      if not leased then
        fields[#fields + 1] = 'lease_expires'
        fields[#fields + 1] = expires
      end
      redis.call('HSET', jk, 'attempts', attempts, 'token', token, 'state', 'running',
        'lease_expires', expires)
      local entry = attempts .. '|' .. NOW_S .. '||'
      local history = {entry}
      if redis.call('RPUSH', histkey(seq), entry) > 1 then
        history = redis.call('LRANGE', histkey(seq), 0, -1)
      end
      redis.call('ZADD', K_RUNNING, expires, m)
      out[#out + 1] = {seq, fields, history}
    end
  end
  if redis.call('ZCARD', K_PENDING) > 0 then wake() end
end
return out
