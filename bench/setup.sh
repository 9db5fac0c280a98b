#!/usr/bin/env bash
# Install what `coremesh-bench compare` compares against and checks with: nginx, HAProxy,
# wrk and h2load (`--protocol h2c`; nghttp2-client) from Debian packages (taskset comes with
# util-linux), and build the pingora peer
# (bench/peers/pingora/, its own Cargo project outside the workspace's default build) into
# target/pingora/. Run as root on a fresh machine:
#   bash bench/setup.sh
# COREMESH_BENCH_NO_PINGORA=1 skips the pingora build (several minutes on 2 cores).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

if [ "$(id -u)" -ne 0 ]; then
    echo "bench/setup.sh: run as root (apt-get install)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update
# cmake: the pingora peer's zlib-ng (libz-ng-sys, through flate2) builds with it.
apt-get install -y nginx haproxy wrk nghttp2-client util-linux cmake

# The packages start system services; the bench starts its own copies with generated
# configs on loopback, so stop the system ones where a service manager runs them.
for service in nginx haproxy; do
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$service" 2>/dev/null; then
        systemctl stop "$service" || true
    fi
done

if [ "${COREMESH_BENCH_NO_PINGORA:-0}" != 1 ]; then
    if command -v cargo >/dev/null 2>&1; then
        echo "building the pingora peer (target/pingora/release/coremesh-bench-pingora)..."
        if CARGO_TARGET_DIR="$root/target/pingora" cargo build --release --locked \
            --manifest-path "$root/bench/peers/pingora/Cargo.toml"; then
            "$root/target/pingora/release/coremesh-bench-pingora" --version
        else
            echo "bench/setup.sh: the pingora peer did not build; compare reports it as skipped" >&2
        fi
    else
        echo "bench/setup.sh: cargo not found; the pingora peer is not built" >&2
    fi
fi

nginx -v
haproxy -v | head -n 1
wrk -v 2>&1 | head -n 1 || true
echo "ready: cargo run --release -p coremesh-bench -- compare --quick"
