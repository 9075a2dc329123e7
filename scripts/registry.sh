#!/bin/sh
# A throwaway OCI registry for tests and local pushes: Debian's docker-registry
# (distribution 2.8) with its own config, filesystem storage in a state folder,
# listening on 127.0.0.1 only; no auth, or htpasswd basic auth with --auth USER:PASS.
#
#   scripts/registry.sh start [DIR] [--port N] [--auth USER:PASS]   prints 127.0.0.1:PORT
#   scripts/registry.sh stop  [DIR]
#   scripts/registry.sh status [DIR]
#
# DIR (default: ${TMPDIR:-/tmp}/mlfn-registry) holds config.yml, data/, htpasswd,
# registry.log, pid and addr. Port 0 / unset picks a free ephemeral port.
set -eu

cmd=${1:-}
[ $# -gt 0 ] && shift
dir=${TMPDIR:-/tmp}/mlfn-registry
case "${1:-}" in ""|--*) ;; *) dir=$1; shift ;; esac
port=0
auth=""
while [ $# -gt 0 ]; do
    case "$1" in
        --port) port=$2; shift 2 ;;
        --auth) auth=$2; shift 2 ;;
        *) echo "registry.sh: unknown option $1" >&2; exit 2 ;;
    esac
done

running() { [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; }

case "$cmd" in
start)
    if running; then cat "$dir/addr"; exit 0; fi
    command -v docker-registry >/dev/null || { echo "registry.sh: docker-registry is not installed (apt-get install docker-registry)" >&2; exit 1; }
    mkdir -p "$dir/data"
    if [ "$port" = 0 ]; then
        port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    fi
    {
        echo "version: 0.1"
        echo "log: {level: warn, accesslog: {disabled: true}}"
        echo "storage:"
        echo "  filesystem: {rootdirectory: $dir/data}"
        echo "  delete: {enabled: true}"
        echo "http:"
        echo "  addr: 127.0.0.1:$port"
        echo "  secret: mlfn-test-$(date +%s)"
        if [ -n "$auth" ]; then
            echo "auth:"
            echo "  htpasswd: {realm: mlfn-registry, path: $dir/htpasswd}"
        fi
    } > "$dir/config.yml"
    if [ -n "$auth" ]; then
        # bcrypt entry (the only hash distribution accepts), without echoing the password
        MLFN_REGISTRY_AUTH="$auth" python3 -W ignore -c '
import crypt, os
user, _, pw = os.environ["MLFN_REGISTRY_AUTH"].partition(":")
print(f"{user}:{crypt.crypt(pw, crypt.mksalt(crypt.METHOD_BLOWFISH))}")' > "$dir/htpasswd"
        chmod 600 "$dir/htpasswd"
    fi
    nohup docker-registry serve "$dir/config.yml" > "$dir/registry.log" 2>&1 &
    echo $! > "$dir/pid"
    echo "127.0.0.1:$port" > "$dir/addr"
    i=0
    until python3 -c "import urllib.request,urllib.error,sys
try: urllib.request.urlopen('http://127.0.0.1:$port/v2/', timeout=1)
except urllib.error.HTTPError as e: sys.exit(0 if e.code == 401 else 1)
except Exception: sys.exit(1)" 2>/dev/null; do
        i=$((i + 1))
        if [ $i -gt 100 ] || ! running; then
            echo "registry.sh: the registry did not start; see $dir/registry.log" >&2
            exit 1
        fi
        sleep 0.1
    done
    cat "$dir/addr"
    ;;
stop)
    if running; then
        kill "$(cat "$dir/pid")"
    fi
    rm -f "$dir/pid"
    ;;
status)
    if running; then echo "running at $(cat "$dir/addr")"; else echo "stopped"; exit 1; fi
    ;;
*)
    echo "usage: registry.sh start|stop|status [DIR] [--port N] [--auth USER:PASS]" >&2
    exit 2
    ;;
esac
