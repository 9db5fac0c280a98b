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
toolchain=()
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  toolchain=(+nightly)
else
  echo "fuzz: no nightly toolchain; building with the default one (RUSTC_BOOTSTRAP=1)" >&2
  export RUSTC_BOOTSTRAP=1
fi

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo "${toolchain[@]}" fuzz list)
fi

# One build of every target (release, with debug assertions and AddressSanitizer).
cargo "${toolchain[@]}" fuzz build --release --debug-assertions
triple="$(rustc "${toolchain[@]}" -vV | sed -n 's/^host: //p')"
bin_dir="target/$triple/release"

failed=()
summary=()
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target" "artifacts/$target"
  log="artifacts/$target/last-run.log"
  echo "fuzz: $target for ${seconds}s"
  status=0
  # Inputs larger than 64 KiB add nothing a smaller one cannot show; -rss_limit_mb keeps a
  # runaway allocation a finding rather than an out-of-memory kill.
  "$bin_dir/$target" "corpus/$target" \
    -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 -timeout=10 \
    -print_final_stats=1 -artifact_prefix="artifacts/$target/" >"$log" 2>&1 || status=$?
  runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
  summary+=("$(printf '%-16s %12s executions  %s' "$target" "${runs:-?}" "$([ $status -eq 0 ] && echo ok || echo CRASH)")")
  if [ $status -ne 0 ]; then
    failed+=("$target")
    grep -E -A25 '^(==[0-9]+==ERROR|thread .* panicked|ERROR: libFuzzer)' "$log" | head -40 >&2 || tail -40 "$log" >&2
    ls -1 "artifacts/$target/" | grep -v last-run.log | sed "s|^|fuzz: saved artifacts/$target/|" >&2 || true
  fi
done

printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: crashed: ${failed[*]}" >&2
  exit 1
fi
