#!/usr/bin/python3
"""A fleet of fake Raft nodes for bench/run-recall.

Each node exports its term and commit index as Prometheus gauges on
http://127.0.0.1:PORT/metrics and, at the same moments, appends the same
values as etcd-format trace events (the format of gen_etcd_trace and of
rules/packs/etcd-raft.yaml) to an NDJSON file that `invariantd run` tails.

Every node is one trial: it sits at term BASE, then, at a random moment,
its term regresses to BASE-1 (a restart from a stale snapshot) for a given
duration, then returns to BASE (it hears from the leader). The gauge and the
event stream change under one lock, so both observers see the same
regression; a node also logs a heartbeat event every --heartbeat seconds
(commit index + 1), as raft's trace logger logs every message.

Trials of one duration are stratified: trial k starts at k*SLOT + U(0, SLOT)
after the go signal, so each start has a uniformly random phase against the
scrape clock and, with SLOT >= the scrape interval, two short regressions
of one duration never share a scrape.

Written in Python (not bash) for its timer precision at 10 ms and its
standard-library HTTP server; Debian's python3 only.

Files: --port-file (the port, once listening), --go-file (created by the
driver once Prometheus has scraped; the schedule starts 1 s later),
--trials-out (one line per trial when all are over:
"nid duration_s start_epoch end_epoch", the epochs as applied), then the
service keeps serving until SIGTERM.
"""

import argparse
import heapq
import json
import os
import random
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BASE_TERM = 7


class Fleet:
    def __init__(self, out_path):
        self.lock = threading.Lock()
        self.term = {}
        self.commit = {}
        self.fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                          0o644)

    def add(self, nid):
        with self.lock:
            self.term[nid] = BASE_TERM
            self.commit[nid] = 1
            self._log(nid, "InitState")

    def set_term(self, nid, term, name):
        """Changes the gauge and logs the event at once; the epoch."""
        with self.lock:
            self.term[nid] = term
            self._log(nid, name)
            return time.time()

    def heartbeat(self, nid):
        with self.lock:
            self.commit[nid] += 1
            self._log(nid, "ReceiveAppendEntriesRequest")

    def _log(self, nid, name):
        c = self.commit[nid]
        event = {
            "level": "debug",
            "ts": round(time.time(), 6),
            "caller": "rafttest/trace_logger.go:42",
            "msg": "trace",
            "tag": "trace",
            "event": {
                "name": name,
                "nid": nid,
                "state": {"term": self.term[nid], "vote": "", "commit": c},
                "role": "StateFollower",
                "log": c + 1,
                "applied": c,
            },
        }
        line = json.dumps(event, separators=(",", ":")) + "\n"
        os.write(self.fd, line.encode())  # one write(2) per event

    def exposition(self):
        with self.lock:
            terms = sorted(self.term.items())
            commits = sorted(self.commit.items())
        out = ["# HELP raft_term Current Raft term of the node.",
               "# TYPE raft_term gauge"]
        out += ['raft_term{nid="%s"} %d' % kv for kv in terms]
        out += ["# HELP raft_commit_index Raft commit index of the node.",
                "# TYPE raft_commit_index gauge"]
        out += ['raft_commit_index{nid="%s"} %d' % kv for kv in commits]
        return ("\n".join(out) + "\n").encode()


def serve(fleet, port_file):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404)
                return
            body = fleet.exposition()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    with open(port_file + ".tmp", "w") as f:
        f.write("%d\n" % server.server_address[1])
    os.rename(port_file + ".tmp", port_file)
    threading.Thread(target=server.serve_forever, daemon=True).start()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="NDJSON file to append to")
    p.add_argument("--port-file", required=True)
    p.add_argument("--go-file", required=True)
    p.add_argument("--trials-out", required=True)
    p.add_argument("--durations", required=True,
                   help="comma-separated regression durations, seconds")
    p.add_argument("--trials", type=int, required=True,
                   help="trials per duration")
    p.add_argument("--slot", type=float, required=True,
                   help="seconds between trial k and k+1 of one duration")
    p.add_argument("--heartbeat", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    rng = random.Random(a.seed)

    durations = [float(d) for d in a.durations.split(",")]
    fleet = Fleet(a.out)
    trials = []  # (nid, duration)
    for d in durations:
        for k in range(a.trials):
            nid = "d%gs-t%d" % (d, k)
            trials.append((nid, d, k))
            fleet.add(nid)
    serve(fleet, a.port_file)

    # Heartbeats from now on, every node at a random phase.
    now = time.monotonic()
    heap = [(now + rng.uniform(0, a.heartbeat), 0, nid, None)
            for nid, _, _ in trials]
    heapq.heapify(heap)
    go = None
    applied = {}  # nid -> [start_epoch, end_epoch]
    pending = len(trials)
    while True:
        if go is None and os.path.exists(a.go_file):
            go = time.monotonic() + 1.0
            for nid, d, k in trials:
                start = go + (k + rng.random()) * a.slot
                heapq.heappush(heap, (start, 1, nid, d))
        when, kind, nid, d = heap[0]
        wait = when - time.monotonic()
        if go is None:
            wait = min(wait, 0.05)
        if wait > 0:
            time.sleep(wait)
            continue
        heapq.heappop(heap)
        if kind == 0:  # heartbeat
            fleet.heartbeat(nid)
            heapq.heappush(heap, (when + a.heartbeat, 0, nid, None))
        elif kind == 1:  # regression starts: restarted from a stale state
            applied[nid] = [fleet.set_term(nid, BASE_TERM - 1, "InitState")]
            heapq.heappush(heap, (when + d, 2, nid, d))
        else:  # the leader's next message brings the term back
            applied[nid].append(
                fleet.set_term(nid, BASE_TERM, "BecomeFollower"))
            pending -= 1
            if pending == 0:
                tmp = a.trials_out + ".tmp"
                with open(tmp, "w") as f:
                    for t_nid, t_d, _ in trials:
                        s, e = applied[t_nid]
                        f.write("%s %g %.6f %.6f\n" % (t_nid, t_d, s, e))
                os.rename(tmp, a.trials_out)


if __name__ == "__main__":
    sys.exit(main())
