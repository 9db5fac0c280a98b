#!/usr/bin/env bash
# The latency a meshed call adds: client -> outbound coremesh -> inbound coremesh -> app,
# against the same call made directly, and against a pair of nginx reverse proxies in the
# same two places (the peer), all in one run.
#
# Two network namespaces joined by a veth pair (made here, removed on exit): a client host
# and an application host. The app is an nginx answering `200 hello` on port 8080.
#   direct    wrk (client ns) -> 10.78.0.2:8080
#   coremesh  wrk -> 10.78.0.2:8080, redirected by `coremesh iptables install` to the
#             client's outbound side (a service claims that address), sent on to the app
#             host, redirected there to the inbound side, then to the app on 127.0.0.1
#   nginx     wrk -> nginx on 127.0.0.1:4140 (client ns) -> nginx on 10.78.0.2:4143 ->
#             the app on 127.0.0.1:8080 (explicit proxies: no nat redirect, keep-alive
#             upstreams, one worker each)
# Each proxy has one core; every process shares the machine's CPUs, as a sidecar does.
# Modes run interleaved, ROUNDS times; the table gives the median of each percentile. After
# each coremesh point both proxies must have counted the calls (else the run fails), and the
# time from spawning each coremesh to its `/ready` answering 200 is printed at the end.
#
# Usage (root): bench/sidecar-latency.sh   [env: COREMESH=path DURATION=s CONNS="1 16" ROUNDS=3 DRIVER=uring|legacy]
set -euo pipefail

COREMESH=${COREMESH:-target/release/coremesh}
DURATION=${DURATION:-10}
CONNS=${CONNS:-"1 16"}
ROUNDS=${ROUNDS:-3}
PROXY_UID=${PROXY_UID:-2102}
DRIVER=${DRIVER:-uring}
A=cmlat-a-$$
B=cmlat-b-$$
A_IP=10.78.0.1
B_IP=10.78.0.2
WORK=$(mktemp -d /tmp/coremesh-sidecar-latency.XXXXXX)
chmod 755 "$WORK"
PIDS=()

[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces and iptables)" >&2; exit 2; }
for p in ip iptables wrk nginx setpriv; do
    command -v "$p" >/dev/null || { echo "missing program: $p" >&2; exit 2; }
done
[ -x "$COREMESH" ] || { echo "no coremesh binary at $COREMESH (cargo build --release)" >&2; exit 2; }
COREMESH=$(realpath "$COREMESH")

cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    ip netns del "$A" 2>/dev/null || true
    ip netns del "$B" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

ip netns add "$A"
ip netns add "$B"
ip link add name cm0 netns "$A" type veth peer name cm0 netns "$B"
for ns in "$A:$A_IP" "$B:$B_IP"; do
    n=${ns%%:*}
    ip -n "$n" addr add "${ns##*:}/24" dev cm0
    ip -n "$n" link set cm0 up
    ip -n "$n" link set lo up
done

# nginx, foreground, one worker, everything in $WORK.
nginx_conf() { # name body
    cat >"$WORK/$1.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $WORK/$1.pid;
error_log $WORK/$1.err warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/$1-body;
    proxy_temp_path $WORK/$1-proxy;
    fastcgi_temp_path $WORK/$1-fcgi;
    uwsgi_temp_path $WORK/$1-uwsgi;
    scgi_temp_path $WORK/$1-scgi;
    $2
}
EOF
}
start() { # ns args...
    local ns=$1
    shift
    ip netns exec "$ns" "$@" >>"$WORK/log" 2>&1 &
    PIDS+=($!)
}
wait_port() { # ns addr port
    for _ in $(seq 1 200); do
        if ip netns exec "$1" bash -c "exec 3<>/dev/tcp/$2/$3" 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "nothing listens on $2:$3 in $1; log:" >&2
    cat "$WORK/log" >&2
    exit 1
}

nginx_conf app 'server { listen 8080; location / { return 200 "hello\n"; } }'
start "$B" nginx -c "$WORK/app.conf"
wait_port "$B" 127.0.0.1 8080

# The nginx peer: an explicit proxy on each host.
nginx_conf peer-out "upstream app { server $B_IP:4143; keepalive 64; }
    server { listen 127.0.0.1:4140; location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"
nginx_conf peer-in 'upstream app { server 127.0.0.1:8080; keepalive 64; }
    server { listen 4143; location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; } }'

cat >"$WORK/out.toml" <<EOF
[proxy]
listen = "127.0.0.1:4180"
admin = "127.0.0.1:4191"
cores = 1
pin_cores = false
driver = "$DRIVER"

[outbound]
listen = "127.0.0.1:4140"

[[services]]
name = "app"
endpoints = ["$B_IP:8080"]
addresses = ["$B_IP:8080"]
EOF
cat >"$WORK/in.toml" <<EOF
[proxy]
listen = "127.0.0.1:4180"
admin = "127.0.0.1:4191"
cores = 1
pin_cores = false
driver = "$DRIVER"

[inbound]
listen = "0.0.0.0:4143"
EOF
chmod 644 "$WORK"/*.toml

admin_get() { # ns path: the admin server's answer
    ip netns exec "$1" bash -c "exec 3<>/dev/tcp/127.0.0.1/4191 && printf 'GET $2 HTTP/1.0\r\n\r\n' >&3 && cat <&3" 2>/dev/null
}
# Polled every 2 ms (each poll is a short bash run), so start to ready is up to a few ms late.
wait_ready() { # ns
    for _ in $(seq 1 2000); do
        if admin_get "$1" /ready | head -1 | grep -q " 200"; then
            return 0
        fi
        sleep 0.002
    done
    echo "coremesh in $1 not ready; log:" >&2
    cat "$WORK/log" >&2
    exit 1
}

MESH_PIDS=()
mesh_up() {
    for side in "$A:out" "$B:in"; do
        ns=${side%%:*}
        ip netns exec "$ns" setpriv --reuid "$PROXY_UID" --regid "$PROXY_UID" --clear-groups -- \
            "$COREMESH" run --config "$WORK/${side##*:}.toml" >>"$WORK/log" 2>&1 &
        MESH_PIDS+=($!)
        local spawned=$EPOCHREALTIME
        wait_ready "$ns"
        echo "$spawned $EPOCHREALTIME" | awk '{ printf "%.1f\n", ($2 - $1) * 1000 }' >>"$WORK/ready"
        ip netns exec "$ns" "$COREMESH" iptables install --proxy-uid "$PROXY_UID" >/dev/null
    done
}
mesh_down() {
    for ns in "$A" "$B"; do ip netns exec "$ns" "$COREMESH" iptables uninstall >/dev/null; done
    for pid in "${MESH_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    MESH_PIDS=()
}
PEER_PIDS=()
peer_up() {
    ip netns exec "$B" nginx -c "$WORK/peer-in.conf" >>"$WORK/log" 2>&1 &
    PEER_PIDS+=($!)
    ip netns exec "$A" nginx -c "$WORK/peer-out.conf" >>"$WORK/log" 2>&1 &
    PEER_PIDS+=($!)
    wait_port "$B" "$B_IP" 4143
    wait_port "$A" 127.0.0.1 4140
}
peer_down() {
    for pid in "${PEER_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    PEER_PIDS=()
}

# wrk's --latency percentiles, in microseconds: "p50 p99".
measure() { # url conns
    local out
    out=$(ip netns exec "$A" wrk -t1 -c"$2" -d"${DURATION}s" --latency "$1")
    echo "$out" | awk '
        function us(v) {
            if (v ~ /us$/) return v + 0; if (v ~ /ms$/) return v * 1000;
            if (v ~ /s$/) return v * 1000000; return v }
        $1 == "50%" { p50 = us($2) } $1 == "99%" { p99 = us($2) }
        /Requests\/sec/ { rps = $2 }
        /Non-2xx/ { bad = $NF }
        END { if (bad) { print "non-2xx answers: " bad > "/dev/stderr"; exit 1 }
              printf "%.0f %.0f %.0f\n", p50, p99, rps }'
}

RESULTS=$WORK/results
: >"$RESULTS"
for round in $(seq 1 "$ROUNDS"); do
    for c in $CONNS; do
        row=$(measure "http://$B_IP:8080/" "$c") || exit 1
        echo "direct $c $row" >>"$RESULTS"
        mesh_up
        row=$(measure "http://$B_IP:8080/" "$c") || exit 1
        echo "coremesh $c $row" >>"$RESULTS"
        # The calls really went through both sides: each counted them.
        for check in "$A:outbound" "$B:inbound"; do
            counted=$(admin_get "${check%%:*}" /metrics |
                awk -v d="direction=\"${check##*:}\"" '/^coremesh_requests_total\{/ && index($0, d) { n += $NF } END { print n + 0 }')
            if [ "$counted" -eq 0 ]; then
                echo "coremesh ${check##*:} counted no request: the calls did not go through it" >&2
                exit 1
            fi
        done
        mesh_down
        peer_up
        row=$(measure "http://127.0.0.1:4140/" "$c") || exit 1
        echo "nginx $c $row" >>"$RESULTS"
        peer_down
    done
    echo "round $round of $ROUNDS done" >&2
done

echo "# $DURATION s per point, median of $ROUNDS rounds; latency in µs; $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
printf "%-9s %5s %8s %8s %9s %10s %10s\n" mode conns p50 p99 req/s "added p50" "added p99"
for c in $CONNS; do
    declare -A P50 P99 RPS
    for mode in direct coremesh nginx; do
        read -r p50 p99 rps < <(for col in 3 4 5; do
            awk -v m="$mode" -v c="$c" -v k="$col" '$1 == m && $2 == c { print $k }' "$RESULTS" |
                sort -n | awk '{ v[NR] = $1 } END { printf "%s ", v[int((NR + 1) / 2)] }'
        done; echo)
        P50[$mode]=$p50 P99[$mode]=$p99 RPS[$mode]=$rps
    done
    for mode in direct coremesh nginx; do
        printf "%-9s %5s %8s %8s %9s %10s %10s\n" "$mode" "$c" "${P50[$mode]}" "${P99[$mode]}" "${RPS[$mode]}" \
            "$((P50[$mode] - P50[direct]))" "$((P99[$mode] - P99[direct]))"
    done
    awk -v c="$c" -v cm=$((P50[coremesh] - P50[direct])) -v ng=$((P50[nginx] - P50[direct])) \
        'BEGIN { if (ng > 0) printf "conns %s: coremesh adds %.2fx the p50 latency the nginx pair adds\n", c, cm / ng }'
done

sort -n "$WORK/ready" | awk '{ v[NR] = $1 } END { printf "coremesh start to ready (spawn to /ready 200, %d starts): min %s ms, median %s ms, max %s ms\n", NR, v[1], v[int((NR + 1) / 2)], v[NR] }'
