-- One node's sync for one destination, atomic on a stock Redis (no
-- module): report what the node's controller knows, claim budget from the
-- shared GCRA, renew the node's connection leases, tell or hear cuts.
--
-- KEYS[1] nodes   hash: node -> "seen_ms rate ceiling open leases active"
-- KEYS[2] tat     string: the GCRA's theoretical arrival time (ms, float)
-- KEYS[3] leases  sorted set: "node#i" scored by the lease's expiry (ms)
-- KEYS[4] cap     string: the connection cap the cluster learned (expires)
-- KEYS[5] cuts    hash: epoch (cuts so far), by (the node of the last)
--
-- ARGV: node, rate, ceiling (0: none), budget wanted, burst (ms),
--       node ttl (ms), connections wanted, connections open,
--       open at a refused connection (0: none), lease ttl (ms),
--       cap ttl (ms), cut (1: this node cut since its last sync),
--       active (1: this node sent to the destination in the last second)
--
-- Returns: budget granted, connections granted, nodes sending, shared
-- ceiling (string), learned cap (-1: none), cut epoch, 1 if the last cut
-- was this node's.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local node = ARGV[1]
local rate = tonumber(ARGV[2])
local ceiling = tonumber(ARGV[3])
local want = tonumber(ARGV[4])
local burst = tonumber(ARGV[5])
local node_ttl = tonumber(ARGV[6])
local want_conns = tonumber(ARGV[7])
local open = tonumber(ARGV[8])
local refused_open = tonumber(ARGV[9])
local lease_ttl = tonumber(ARGV[10])
local cap_ttl = tonumber(ARGV[11])
local cut = tonumber(ARGV[12])
local active = tonumber(ARGV[13])

-- The live nodes (this one included): the rates of those sending add up
-- to the budget's rate, and they are the nodes counted; every live node's
-- ceiling (or rate, where none was learned) adds up to the shared
-- ceiling. Nodes not seen for node_ttl are gone (crashed or idle).
local held = 0
local rates = rate
local ceilings = ceiling
if ceilings <= 0 then ceilings = rate end
local others_open = 0
local nodes = active
local entries = redis.call('HGETALL', KEYS[1])
for i = 1, #entries, 2 do
  local name = entries[i]
  local seen, r, c, o, l, a = string.match(entries[i + 1], '^(%S+) (%S+) (%S+) (%S+) (%S+) (%S+)$')
  if name == node then
    held = tonumber(l) or 0
  elseif seen == nil or now - tonumber(seen) > node_ttl then
    redis.call('HDEL', KEYS[1], name)
  else
    r = tonumber(r)
    c = tonumber(c)
    if c > 0 then ceilings = ceilings + c else ceilings = ceilings + r end
    others_open = others_open + tonumber(o)
    if a == '1' then
      rates = rates + r
      nodes = nodes + 1
    end
  end
end
local counted = math.max(nodes, 1)

-- Connection leases: expired ones (a crashed node's) go; this node's are
-- given again, up to what it may hold.
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
for i = 0, held - 1 do
  redis.call('ZREM', KEYS[3], node .. '#' .. i)
end
local others = redis.call('ZCARD', KEYS[3])
local cap = tonumber(redis.call('GET', KEYS[4]))
if refused_open > 0 then
  -- The destination refused a connection with this many open across the
  -- cluster: its limit is one fewer.
  local learned = math.max(1, others_open + refused_open - 1)
  if cap == nil or learned < cap then cap = learned end
  redis.call('SET', KEYS[4], cap, 'PX', cap_ttl)
end
local grant = want_conns
if cap ~= nil then
  local fair = math.max(1, math.floor(cap / counted))
  grant = math.min(want_conns, math.max(cap - others, fair))
end
if grant < 1 then grant = 1 end
for i = 0, grant - 1 do
  redis.call('ZADD', KEYS[3], now + lease_ttl, node .. '#' .. i)
end
redis.call('PEXPIRE', KEYS[3], lease_ttl * 2)

redis.call('HSET', KEYS[1], node,
  string.format('%d %.3f %.3f %d %d %d', now, rate, math.max(ceiling, 0), open, grant, active))
redis.call('PEXPIRE', KEYS[1], node_ttl * 10)

-- The budget: GCRA at the sum of the rates. Claimed ahead, never banked
-- beyond the burst: after an idle spell (or Redis restarted empty) the
-- arrival time starts at now.
local granted = 0
if want > 0 and rates > 0 then
  local interval = 1000.0 / rates
  local tat = tonumber(redis.call('GET', KEYS[2])) or now
  if tat < now then tat = now end
  local room = math.floor((now + burst - tat) / interval)
  if room > 0 then
    granted = math.min(want, room)
    tat = tat + granted * interval
    redis.call('SET', KEYS[2], string.format('%.3f', tat), 'PX',
      math.ceil(tat - now + burst + 1000))
  end
end

-- Cuts: told once by the node that cut, heard by the others.
if cut == 1 then
  redis.call('HINCRBY', KEYS[5], 'epoch', 1)
  redis.call('HSET', KEYS[5], 'by', node)
  redis.call('PEXPIRE', KEYS[5], node_ttl * 100)
end
local epoch = tonumber(redis.call('HGET', KEYS[5], 'epoch')) or 0
local mine = 0
if redis.call('HGET', KEYS[5], 'by') == node then mine = 1 end

return {granted, grant, nodes, string.format('%.3f', ceilings), cap or -1, epoch, mine}
