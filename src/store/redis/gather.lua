#!lua flags=no-writes
-- One consistent read of what a thread list or an unread count needs (see reads.rs): the
-- log's head, the user's subscribe_all, the tenant's preferences, and from each recency
-- index the newest members below a bound with their thread records and the records of the
-- folders those threads are on. The rules are applied in Rust.
--
-- KEYS[1] seq, KEYS[2] suball, KEYS[3] prefs, KEYS[4] thread, KEYS[5] folder,
-- KEYS[6..] recency indexes (lthreads:* or lunread:*).
-- ARGV[1] user id, ARGV[2] most members per index (-1: all), ARGV[3..] each index's
-- exclusive upper bound ('+' for none).
-- Returns {head, subscribe_all ('' or '1'), prefs ('' when unset),
--          {per index: {member, thread record, member, thread record, ...}},
--          {folder id, folder record, ...}}.

local head = redis.call('GET', KEYS[1]) or '0'
local sub = redis.call('HGET', KEYS[2], ARGV[1]) or ''
local prefs = redis.call('GET', KEYS[3]) or ''
local count = tonumber(ARGV[2])

local lists, folders, seen = {}, {}, {}
for i = 6, #KEYS do
  local list = {}
  local members = redis.call('ZREVRANGEBYLEX', KEYS[i], ARGV[i - 3], '-', 'LIMIT', 0, count)
  for _, m in ipairs(members) do
    -- A member is 20 digits, ':', the thread id.
    local record = redis.call('HGET', KEYS[4], string.sub(m, 22)) or ''
    list[#list + 1] = m
    list[#list + 1] = record
    if record ~= '' then
      local folder = cjson.decode(record).folder_id
      if type(folder) == 'string' and not seen[folder] then
        seen[folder] = true
        folders[#folders + 1] = folder
        folders[#folders + 1] = redis.call('HGET', KEYS[5], folder) or ''
      end
    end
  end
  lists[#lists + 1] = list
end
return {head, sub, prefs, lists, folders}
