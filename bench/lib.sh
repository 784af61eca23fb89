# Shared helpers of bench/run-peers, bench/run-memory and bench/run-scaling.
# Sourced, not run. Expects `set -euo pipefail` and the repository root as
# the working directory.

# Parses the options every bench script takes; sets quick, build, no_build,
# out, and bench_args (the same options, to hand on).
#   --quick        small sizes: a few minutes
#   --build-dir D  where the binaries are built (default build/); both a
#                  CMake build tree (D/invariantd, D/bench/NAME) and a flat
#                  directory of binaries (D/NAME) work
#   --no-build     use the binaries in the build dir as they are
#   --out D        raw data and tables (default: a new directory in /tmp)
bench_parse_args() {
  local usage=$1
  shift
  quick=0 build=build no_build=0 out=""
  while (($#)); do
    case "$1" in
      --quick) quick=1 ;;
      --build-dir) build=$2; shift ;;
      --no-build) no_build=1 ;;
      --out) out=$2; shift ;;
      -h | --help) echo "$usage"; exit 0 ;;
      *) echo "$usage" >&2; exit 2 ;;
    esac
    shift
  done
  if [[ -z $out ]]; then out=$(mktemp -d /tmp/invariantd-bench.XXXXXX); fi
  mkdir -p "$out"
  bench_args=(--build-dir "$build" --out "$out")
  if ((quick)); then bench_args+=(--quick); fi
  if ((no_build)); then bench_args+=(--no-build); fi
}

# Builds the given CMake targets in $build (unless --no-build).
bench_build() {
  if ((no_build)); then return; fi
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$build" -j"$(nproc)" --target "$@" >/dev/null
}

# Path of a built binary: $build/bench/NAME, else $build/NAME.
bench_bin() {
  local b
  for b in "$build/bench/$1" "$build/$1"; do
    if [[ -x $b ]]; then
      echo "$b"
      return
    fi
  done
  echo "bench: $1 not found in $build (build it, or drop --no-build)" >&2
  exit 1
}

bench_loadavg() { cut -d ' ' -f 1-3 /proc/loadavg; }

# Percent of all CPU time that was busy over one second (from /proc/stat).
# Called between measurements, when nothing of the benchmark runs, so it is
# the other processes' share. The load average is no measure of that here:
# its 1-minute figure still counts the previous benchmark step.
bench_cpu_busy() {
  local a b
  a=$(head -n 1 /proc/stat)
  sleep 1
  b=$(head -n 1 /proc/stat)
  awk -v a="$a" -v b="$b" 'BEGIN {
    n = split(a, x); split(b, y); t = 0
    for (i = 2; i <= n; i++) t += y[i] - x[i]
    idle = (y[5] - x[5]) + (y[6] - x[6])  # idle + iowait
    printf "%d", (t > 0 ? 100 * (t - idle) / t : 0)
  }'
}

# One line for the top of every table: when, where, how loaded. A table
# taken while other processes used 15% or more of the CPUs is marked
# preliminary.
bench_stamp() {
  local busy
  busy=$(bench_cpu_busy)
  echo "_$(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) CPUs, CPU busy in the second before: ${busy}%, load average: $(bench_loadavg)$(
    ((busy >= 15)) && echo " (machine busy: preliminary)")_"
}

# bench_time OUTFILE CMD...: runs CMD with stdout to OUTFILE under
# /usr/bin/time; sets t_wall t_cpu (user + sys, s) t_rss (peak, KiB) and
# t_status (CMD's exit status; not fatal).
bench_time() {
  local o=$1
  shift
  local tf
  tf=$(mktemp)
  t_status=0
  /usr/bin/time -f '%e %U %S %M' -o "$tf" "$@" >"$o" || t_status=$?
  read -r t_wall u s t_rss < <(tail -n 1 "$tf")
  t_cpu=$(awk -v u="$u" -v s="$s" 'BEGIN { printf "%.2f", u + s }')
  rm -f "$tf"
}

# bench_fmt N: integer with thousands separators.
bench_fmt() { LC_ALL=C awk -v n="$1" 'BEGIN { s = sprintf("%.0f", n); r = ""; while (length(s) > 3) { r = "," substr(s, length(s) - 2) r; s = substr(s, 1, length(s) - 3) } print s r }'; }

# bench_div A B [FMT [SCALE]]: A * SCALE / B formatted (default %.2f), "-"
# when B is 0.
bench_div() { awk -v a="$1" -v b="$2" -v f="${3:-%.2f}" -v m="${4:-1}" 'BEGIN { if (b == 0) print "-"; else printf f "\n", a * m / b }'; }

# Generates an etcd-format trace: bench_trace FILE EVENTS CLUSTERS ZIPF
# FAULTS. Writes the injected faults to FILE.faults.
bench_trace() {
  local args=(--events "$2" --clusters "$3" --nodes 5 --faults "$5")
  if [[ $4 != 0 ]]; then args+=(--zipf "$4"); fi
  "$(bench_bin gen_etcd_trace)" "${args[@]}" >"$1" 2>"$1.faults"
}

# The etcd-raft pack with max_keys raised to 20M on every stateful rule, for
# key counts above the pack's default of 1M (otherwise keys are evicted and
# checks lost). Prints the file's path.
bench_pack_20m() {
  local f=$out/etcd-raft-20m.yaml
  awk '{ print } /^    kind: (monotonic|agreement|transition)$/ { print "    max_keys: 20000000" }' \
    rules/packs/etcd-raft.yaml >"$f"
  echo "$f"
}
