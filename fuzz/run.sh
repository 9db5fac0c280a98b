#!/usr/bin/env bash
# Build every cargo-fuzz target once, run each for SECONDS (default 60) from its corpus, print
# the executions per target, and exit non-zero if any target crashed (its input is saved
# under fuzz/artifacts/<target>/).
#
#   fuzz/run.sh 60              every target, one minute each
#   fuzz/run.sh 300 chunked_body one target, five minutes
set -euo pipefail
cd "$(dirname "$0")"

seconds="${1:-60}"
shift || true

# cargo-fuzz needs a nightly compiler for the sanitizer flags.
if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "fuzz: no nightly toolchain (rustup toolchain install nightly)" >&2
  exit 2
fi
toolchain=(+nightly)

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo "${toolchain[@]}" fuzz list)
fi

# One build of every target (release, with debug assertions and AddressSanitizer).
cargo "${toolchain[@]}" fuzz build --release --debug-assertions
triple="$(rustc "${toolchain[@]}" -vV | sed -n 's/^host: //p')"
bin_dir="target/$triple/release"

# Targets run side by side, as many at a time as there are CPUs (FUZZ_JOBS to change).
jobs="${FUZZ_JOBS:-$(nproc 2>/dev/null || echo 1)}"

run_target() {
  local target="$1" log="artifacts/$1/last-run.log"
  mkdir -p "corpus/$target" "artifacts/$target"
  # -max_len: inputs beyond 64 KiB add nothing a smaller one cannot show; -rss_limit_mb keeps
  # a runaway allocation a finding rather than an out-of-memory kill.
  "$bin_dir/$target" "corpus/$target" \
    -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 -timeout=10 \
    -print_final_stats=1 -artifact_prefix="artifacts/$target/" >"$log" 2>&1
}

echo "fuzz: ${targets[*]} for ${seconds}s each, $jobs at a time"
declare -A pids=()
for target in "${targets[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do
    wait -n || true
  done
  run_target "$target" &
  pids[$target]=$!
done

failed=()
for target in "${targets[@]}"; do
  status=0
  wait "${pids[$target]}" || status=$?
  log="artifacts/$target/last-run.log"
  runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
  printf '%-16s %12s executions  %s\n' "$target" "${runs:-?}" "$([ $status -eq 0 ] && echo ok || echo CRASH)"
  if [ $status -ne 0 ]; then
    failed+=("$target")
    grep -E -A12 '^(thread .* panicked|==[0-9]+==ERROR: AddressSanitizer|ERROR: libFuzzer)' "$log" | head -30 >&2 || tail -30 "$log" >&2
    ls -1 "artifacts/$target/" | grep -v last-run.log | sed "s|^|fuzz: saved fuzz/artifacts/$target/|" >&2 || true
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: crashed: ${failed[*]}" >&2
  exit 1
fi
