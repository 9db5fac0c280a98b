#!/usr/bin/env bash
# Install what `coremesh-bench compare` compares against and checks with: nginx, HAProxy and
# wrk from Debian packages (taskset comes with util-linux). Run as root on a fresh machine:
#   bash bench/setup.sh
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "bench/setup.sh: run as root (apt-get install)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y nginx haproxy wrk util-linux

# The packages start system services; the bench starts its own copies with generated
# configs on loopback, so stop the system ones where a service manager runs them.
for service in nginx haproxy; do
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$service" 2>/dev/null; then
        systemctl stop "$service" || true
    fi
done

nginx -v
haproxy -v | head -n 1
wrk -v 2>&1 | head -n 1 || true
echo "ready: cargo run --release -p coremesh-bench -- compare --quick"
