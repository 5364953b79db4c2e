-- Remove up to ARGV[3] jobs that are not running; returns how many. The
-- caller repeats until it returns 0, so Redis is never blocked for long.
local left = tonumber(ARGV[3])
local removed = 0
for _, index in ipairs({K_PENDING, K_SCHEDULED, K_FAILED}) do
  if left <= 0 then break end
  local members = redis.call('ZRANGE', index, 0, left - 1)
  for _, m in ipairs(members) do
    local seq = seq_of(m)
    release_unique(seq)
    redis.call('DEL', jobkey(seq), histkey(seq))
    redis.call('ZREM', index, m)
  end
  removed = removed + #members
  left = left - #members
end
return removed
