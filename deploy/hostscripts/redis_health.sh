# Runs ON the Redis host as root (a fact, for `fab status`): INFO of the local Redis, with the
# password from the kit's root-only include file, passed in the environment (never in argv).
# $1 = port
pw=$(sed -n 's/^requirepass "\(.*\)"$/\1/p' /etc/redis/celery-kit-auth.conf 2>/dev/null)
REDISCLI_AUTH="$pw" exec redis-cli --no-auth-warning -h 127.0.0.1 -p "$1" INFO
