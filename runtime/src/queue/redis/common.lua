-- Shared by every script (prepended at build time). Every script gets the
-- same keys, all of one queue and so all in one Redis Cluster slot:
--   KEYS[1] pending    zset, score -priority, member zero-padded seq (FIFO
--                      within a priority: equal scores sort by member)
--   KEYS[2] scheduled  zset, score due time (ms)
--   KEYS[3] running    zset, score lease expiry (ms)
--   KEYS[4] failed     zset, score time of failure (ms)
--   KEYS[5] unique     hash, unique key -> seq of the live job holding it
--   KEYS[6] stats      hash: seq (last job number), done (jobs finished)
--   KEYS[7] wake       list: a marker wakes one blocked worker
-- ARGV[1] is the prefix of job keys (<prefix>{<queue>}:job:), ARGV[2] now
-- (ms, from the caller's clock). A job is a hash at <job prefix><seq> and
-- its attempts a list at <job prefix><seq>:h, one "n|started|ended:kind|outcome"
-- entry per attempt ("n|started||" while it runs). The kind (a failure
-- kind's snake_case name) sits in a field only the host writes, so no
-- outcome text can be read as one; entries from before kinds were kept
-- have a bare "ended".
local K_PENDING, K_SCHEDULED, K_RUNNING, K_FAILED = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local K_UNIQUE, K_STATS, K_WAKE = KEYS[5], KEYS[6], KEYS[7]
local JOB = ARGV[1]
local NOW_S = ARGV[2]
local NOW = tonumber(NOW_S)

local function member(seq) return string.format('%020d', tonumber(seq)) end
local function seq_of(m) return tostring(tonumber(m)) end
local function jobkey(seq) return JOB .. seq end
local function histkey(seq) return JOB .. seq .. ':h' end

-- One marker at most: a woken worker that leaves work behind wakes the next.
local function wake()
  if redis.call('LLEN', K_WAKE) == 0 then redis.call('RPUSH', K_WAKE, '1') end
end

local function release_unique(seq)
  local key = redis.call('HGET', jobkey(seq), 'unique_key')
  if key and redis.call('HGET', K_UNIQUE, key) == seq then
    redis.call('HDEL', K_UNIQUE, key)
  end
end

-- Ends the open attempt with a failure kind and its reason, and makes them
-- the job's error.
local function fail_attempt(seq, kind, reason)
  local hk = histkey(seq)
  local last = redis.call('LINDEX', hk, -1)
  if last then
    local n, started, ended = string.match(last, '^(%d+)|(%d+)|(%d*)|')
    if n and ended == '' then
      redis.call('LSET', hk, -1, n .. '|' .. started .. '|' .. NOW_S .. ':' .. kind .. '|' .. reason)
    end
  end
  redis.call('HSET', jobkey(seq), 'error_kind', kind, 'error', reason)
end

local function to_pending(seq)
  local priority = tonumber(redis.call('HGET', jobkey(seq), 'priority'))
  redis.call('HSET', jobkey(seq), 'state', 'pending')
  redis.call('ZADD', K_PENDING, -priority, member(seq))
end

local function to_failed(seq)
  redis.call('HSET', jobkey(seq), 'state', 'failed', 'failed_at', NOW_S)
  redis.call('ZADD', K_FAILED, NOW, member(seq))
  release_unique(seq)
end

local function record(seq)
  return {seq, redis.call('HGETALL', jobkey(seq)), redis.call('LRANGE', histkey(seq), 0, -1)}
end

-- Due scheduled jobs become pending; expired leases are taken back (the
-- attempt counted), failing the job as worker lost on its last attempt.
local function promote()
  local due = redis.call('ZRANGEBYSCORE', K_SCHEDULED, '-inf', NOW, 'LIMIT', 0, 1000)
  for _, m in ipairs(due) do
    redis.call('ZREM', K_SCHEDULED, m)
    to_pending(seq_of(m))
  end
  local expired = redis.call('ZRANGEBYSCORE', K_RUNNING, '-inf', NOW, 'LIMIT', 0, 1000)
  for _, m in ipairs(expired) do
    local seq = seq_of(m)
    local jk = jobkey(seq)
    redis.call('ZREM', K_RUNNING, m)
    local attempts = redis.call('HGET', jk, 'attempts')
    fail_attempt(seq, 'worker_lost', 'worker lost: lease expired during attempt ' .. attempts)
    if tonumber(attempts) >= tonumber(redis.call('HGET', jk, 'max_attempts')) then
      to_failed(seq)
    else
      to_pending(seq)
    end
  end
end
