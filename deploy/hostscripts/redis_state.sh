# Runs ON a Redis and/or Sentinel host as root (a fact, for the redis and sentinel stages and
# `fab status`): the local Redis's INFO and the local Sentinel's view of the master, printed
# as one JSON document. Logs in as the kit's admin user with the password from its root-only
# file, handed to redis-cli in the environment (never in argv).
# $1 Redis port or "" (no Redis here), $2 Sentinel port or "", $3 master name,
# $4 admin password file, $5 address to ask (default 127.0.0.1)
rport=$1 sport=$2 name=$3 at=${5:-127.0.0.1}
REDISCLI_AUTH=$(head -n 1 "$4" 2>/dev/null)
export REDISCLI_AUTH
cli() { redis-cli --no-auth-warning --user celery-kit -h "$at" "$@" 2>&1; }
# A JSON string of the first line (an error such as NOAUTH or "Could not connect").
first() { awk 'NR == 1 { gsub(/\r/, ""); gsub(/\\/, "\\\\"); gsub(/"/, "\\\""); s = $0 }
               END { printf "\"%s\"", s }'; }
# INFO's key:value lines -> a JSON object; null when there is none (Redis did not answer).
info() { awk '/^[a-z0-9_]+:/ { gsub(/\r/, ""); k = $0; sub(/:.*/, "", k); v = $0; sub(/^[^:]*:/, "", v)
                               gsub(/\\/, "\\\\", v); gsub(/"/, "\\\"", v)
                               printf "%s\"%s\":\"%s\"", (n++ ? "," : "{"), k, v }
              END { print (n ? "}" : "null") }'; }
# Field/value lines (SENTINEL MASTER, SENTINEL REPLICAS) -> JSON objects, a new one at each
# "name" field; as a list when $1 = list, else the first object. Errors -> null.
pairs() { awk -v list="$1" '
    { gsub(/\r/, ""); gsub(/\\/, "\\\\"); gsub(/"/, "\\\"") }
    NR % 2 == 1 { k = $0; if (k == "name") { if (n) out = out "},"; out = out "{"; n++; f = 0 }; next }
    n { out = out (f++ ? "," : "") "\"" k "\":\"" $0 "\"" }
    END { if (n) out = out "}"
          if (list == "list") print "[" out "]"
          else if (n && NR % 2 == 0) { sub(/\},\{.*/, "}", out); print out } else print "null" }'; }

# The error when there is no answer, else null.
why() { if [ "$1" = null ]; then printf '%s\n' "$2" | first; else printf null; fi; }

printf '{'
sep=
if [ -n "$rport" ]; then
    out=$(cli -p "$rport" INFO)
    r=$(printf '%s\n' "$out" | info)
    printf '"redis":%s,"redis_error":%s' "$r" "$(why "$r" "$out")"
    sep=,
fi
if [ -n "$sport" ]; then
    out=$(cli -p "$sport" SENTINEL MASTER "$name")
    m=$(printf '%s\n' "$out" | pairs)
    printf '%s"sentinel":{"master":%s,"error":%s,"replicas":%s,"ckquorum":%s}' "$sep" "$m" \
        "$(why "$m" "$out")" "$(cli -p "$sport" SENTINEL REPLICAS "$name" | pairs list)" \
        "$(cli -p "$sport" SENTINEL CKQUORUM "$name" | first)"
fi
printf '}\n'
