#!/bin/sh
# Start a Sentinel. Its config file is its memory (the primary, the epochs, the other Sentinels)
# and it rewrites it, so it lives on the writable /data; a new one monitors the primary the other
# Sentinels name, or redis-ha-0 on the very first start.
set -eu
self="${POD_NAME}.redis-sentinel"
config=/data/sentinel.conf
if [ ! -s "$config" ]; then
  primary=""
  for n in 0 1 2; do
    [ "redis-sentinel-${n}" = "$POD_NAME" ] && continue
    primary=$(redis-cli -h "redis-sentinel-${n}.redis-sentinel" -p 26379 --raw \
      sentinel get-master-addr-by-name mymaster 2>/dev/null | head -n 1) || primary=""
    [ -n "$primary" ] && break
  done
  [ -n "$primary" ] || primary="redis-ha-0.redis-ha"
  cat >"$config" <<CONF
port 26379
dir /data
sentinel resolve-hostnames yes
sentinel announce-hostnames yes
sentinel announce-ip ${self}
sentinel monitor mymaster ${primary} 6379 2
sentinel auth-pass mymaster ${REDIS_PASSWORD}
sentinel down-after-milliseconds mymaster 5000
sentinel failover-timeout mymaster 60000
sentinel parallel-syncs mymaster 1
CONF
fi
exec redis-server "$config" --sentinel
