# etcd raft: a node's term never regresses (the etcd-raft pack's
# etcd-raft-term-never-regresses rule), for jq. Used by bench/run-peers:
#   jq -n -f bench/peers/term.jq trace.ndjson
# Keeps the highest term seen per node in an object and counts events whose
# term is below it; prints the count.
reduce inputs.event as $e ({max: {}, regressions: 0};
  ($e.nid) as $k | ($e.state.term) as $t |
  if $t < (.max[$k] // 0) then .regressions += 1 else .max[$k] = $t end)
| .regressions
