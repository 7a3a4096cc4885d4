#!/usr/bin/env bash
# Compares `node src/main.ts load` with Tsung (Debian's tsung 1.7) on this
# machine: the server pinned to core 0, the load generator to core 1, each
# run against a fresh server started from the same accounts. Prints, per run,
# what was achieved and the CPU time the load generator used (user + system,
# from /usr/bin/time; Tsung's includes its Erlang VM start-up, about 1 s).
#
#   apt-get install tsung sysstat   # sysstat only for pidstat, optional
#   bash bench/tsung/run.sh                   # all four runs
#   RUNS="chat-ours chat-tsung" bash bench/tsung/run.sh
#
# Settings (environment): USERS (1000), LOGIN_RATE (200 per second),
# LOGIN_S (30), CHAT_RATE (5 messages per second per user), CHAT_S (30),
# PORT (15222), OUT (a temporary directory; kept, with every log and JSON).
set -euo pipefail
cd "$(dirname "$0")/../.."

NODE=node_modules/.bin/node
USERS=${USERS:-1000}
LOGIN_RATE=${LOGIN_RATE:-200}
LOGIN_S=${LOGIN_S:-30}
CHAT_RATE=${CHAT_RATE:-5}
CHAT_S=${CHAT_S:-30}
PORT=${PORT:-15222}
OUT=${OUT:-$(mktemp -d -t xmpp-vs-tsung-XXXXXX)}
RUNS=${RUNS:-login-ours login-tsung chat-ours chat-tsung}
mkdir -p "$OUT"
command -v tsung >/dev/null || { echo "tsung is not installed (apt-get install tsung)" >&2; exit 1; }

SERVER=
start_server() { # $1: data directory
  XMPP_DATA_DIR="$1" XMPP_C2S_PORT=$PORT XMPP_TLS_PORT=$((PORT + 1)) XMPP_REGISTRATION=true XMPP_LOG_LEVEL=warn \
    taskset -c 0 "$NODE" src/main.ts start >"$1.log" 2>&1 &
  SERVER=$!
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "the server did not start: $(cat "$1.log")" >&2
  exit 1
}
stop_server() {
  kill "$SERVER" && wait "$SERVER" || true
  SERVER=
}
trap '[ -n "$SERVER" ] && kill "$SERVER"' EXIT

# Accounts tu1..tuN with passwords password1..passwordN: Tsung's generated
# users (username "tu", passwd "password"); the load tool says --password 'password%i'.
ACCOUNTS=(--user-prefix tu --users "$USERS" --password 'password%i' --mechanism PLAIN)
echo "== accounts: $USERS, in $OUT/template"
start_server "$OUT/template"
"$NODE" src/main.ts load login --port "$PORT" "${ACCOUNTS[@]}" --provision --count 1 --quiet >/dev/null
stop_server

cpu() { # $1: /usr/bin/time output file
  awk '{ printf "CPU %.2f s (user %s + sys %s) in %s s wall = %.0f%% of a core", $1 + $2, $1, $2, $3, 100 * ($1 + $2) / $3 }' "$1"
}

tsung_total() { # $1: log dir, $2: metric; its cumulative count (last field of its last line)
  grep -h "^stats: $2 " "$1"/*/tsung.log | tail -1 | awk '{ print $NF }'
}
tsung_peak() { # $1: log dir, $2: metric; its largest count in one 10-s interval, per second
  grep -h "^stats: $2 " "$1"/*/tsung.log | awk '$3 > max { max = $3 } END { printf "%.0f", max / 10 }'
}
tsung_errors() {
  grep -h "^stats: error_" "$1"/*/tsung.log | awk '{ last[$2] = $NF } END { for (k in last) printf "%s=%s ", k, last[k] }'
}

for run in $RUNS; do
  data="$OUT/data-$run"
  rm -rf "$data" && cp -r "$OUT/template" "$data"
  start_server "$data"
  echo "== $run"
  case $run in
    login-ours)
      /usr/bin/time -f "%U %S %e" -o "$OUT/$run.time" taskset -c 1 "$NODE" src/main.ts load login --port "$PORT" "${ACCOUNTS[@]}" \
        --rate "$LOGIN_RATE" --duration "$LOGIN_S" --json --quiet >"$OUT/$run.json" || true
      cat "$OUT/$run.json"
      ;;
    chat-ours)
      /usr/bin/time -f "%U %S %e" -o "$OUT/$run.time" taskset -c 1 "$NODE" src/main.ts load chat --port "$PORT" "${ACCOUNTS[@]}" \
        --rate "$CHAT_RATE" --count $((USERS * CHAT_RATE * CHAT_S)) --duration $((CHAT_S + 30)) --json --quiet >"$OUT/$run.json" || true
      cat "$OUT/$run.json"
      ;;
    login-tsung)
      sed -e "s/PORT/$PORT/; s/RATE/$LOGIN_RATE/; s/DURATION/$LOGIN_S/; s/USERID_MAX/$USERS/" bench/tsung/login.xml >"$OUT/$run.xml"
      mkdir -p "$OUT/$run.log"
      /usr/bin/time -f "%U %S %e" -o "$OUT/$run.time" taskset -c 1 tsung -f "$OUT/$run.xml" -l "$OUT/$run.log" start >/dev/null 2>&1 || true
      echo "users started $(tsung_total "$OUT/$run.log" users_count), logins completed $(tsung_total "$OUT/$run.log" tr_login); errors: $(tsung_errors "$OUT/$run.log")"
      ;;
    chat-tsung)
      sed -e "s/PORT/$PORT/; s/USERS/$USERS/g; s/ARRIVAL_S/$((USERS / 100))/; s/MESSAGES/$((CHAT_RATE * CHAT_S))/; s/THINK/$(awk "BEGIN { print 1 / $CHAT_RATE }")/g" \
        bench/tsung/chat.xml >"$OUT/$run.xml"
      mkdir -p "$OUT/$run.log"
      /usr/bin/time -f "%U %S %e" -o "$OUT/$run.time" taskset -c 1 tsung -f "$OUT/$run.xml" -l "$OUT/$run.log" start >/dev/null 2>&1 || true
      echo "logins completed $(tsung_total "$OUT/$run.log" tr_login), messages sent (and other no-ack requests) $(tsung_total "$OUT/$run.log" request_noack), stamped messages received $(tsung_total "$OUT/$run.log" xmpp_msg_latency) (at best $(tsung_peak "$OUT/$run.log" xmpp_msg_latency)/s over 10 s); errors: $(tsung_errors "$OUT/$run.log")"
      ;;
    *) echo "unknown run $run" >&2; exit 2 ;;
  esac
  echo "load generator: $(cpu "$OUT/$run.time")"
  stop_server
done
echo "== everything is in $OUT"
