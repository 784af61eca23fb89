# etcd raft: a node's term never regresses (the etcd-raft pack's
# etcd-raft-term-never-regresses rule), for jq. Used by bench/run-peers:
#   jq -n -f bench/peers/term.jq trace.ndjson
# Keeps the highest term seen per node in one flat object (node id -> term;
# the key "#" counts the regressions) and prints the count. A flat object is
# the fastest of the formulations tried: a nested {max: {...}, n: N}
# accumulator was 7x slower in jq 1.6.
reduce (inputs.event | [.nid, .state.term]) as [$k, $t] ({};
  if $t < (.[$k] // 0) then .["#"] += 1 else .[$k] = $t end)
| .["#"] // 0
