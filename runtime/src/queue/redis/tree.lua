-- A job tree's count, kept in its root's queue slot (KEYS[1], a hash:
-- jobs = jobs the tree ever held, root included; live = follow-ups not yet
-- done) with a copy on the root's record (KEYS[2], field tree_jobs) for as
-- long as the root exists. Run on its own: the follow-up being counted is
-- enqueued in its own queue's slot, which may be on another node.
--
-- ARGV[1] is what to do:
--   reserve depth max_jobs keep_ms: count one more job unless the tree
--     holds max_jobs already. Returns {'ok', jobs before}, {'full', jobs},
--     or {'closed', 0} when a follow-up (depth > 1) finds no count.
--   refund: take back a reservation whose follow-up was not enqueued (its
--     unique key was held meanwhile).
--   leave: a follow-up is done.
-- The count is dropped when no follow-up is live; only the root can bring
-- it back (from its record), so neither finishing nor retrying jobs gives a
-- tree a new budget.
local tree, root = KEYS[1], KEYS[2]
local op = ARGV[1]

local function leave()
  if redis.call('HINCRBY', tree, 'live', -1) <= 0 then redis.call('DEL', tree) end
end

if op == 'reserve' then
  local depth, max_jobs, keep = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
  local jobs = tonumber(redis.call('HGET', tree, 'jobs'))
  if not jobs then
    if depth > 1 then return {'closed', 0} end
    jobs = tonumber(redis.call('HGET', root, 'tree_jobs') or '1')
  end
  if jobs >= max_jobs then return {'full', jobs} end
  redis.call('HSET', tree, 'jobs', jobs + 1)
  redis.call('HINCRBY', tree, 'live', 1)
  redis.call('PEXPIRE', tree, keep)
  if redis.call('EXISTS', root) == 1 then redis.call('HSET', root, 'tree_jobs', jobs + 1) end
  return {'ok', jobs}
end
if redis.call('EXISTS', tree) == 0 then return {'ok', 0} end
if op == 'refund' then
  local jobs = redis.call('HINCRBY', tree, 'jobs', -1)
  if redis.call('EXISTS', root) == 1 then redis.call('HSET', root, 'tree_jobs', jobs) end
end
leave()
return {'ok', 0}
