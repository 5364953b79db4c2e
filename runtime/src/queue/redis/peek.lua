-- How long until this queue may have runnable work: 0 if a job is pending
-- or due, ms until the next due time or lease expiry, or -1 if never.
if redis.call('ZCARD', K_PENDING) > 0 then return 0 end
local next_at
for _, key in ipairs({K_SCHEDULED, K_RUNNING}) do
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if first[2] then
    local at = tonumber(first[2])
    if not next_at or at < next_at then next_at = at end
  end
end
if not next_at then return -1 end
if next_at <= NOW then return 0 end
return next_at - NOW
