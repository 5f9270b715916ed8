#!/bin/sh
# Start a Redis server as the replica of the current primary, as the Sentinels name it. With no
# Sentinel answering (the very first start), redis-ha-0 is the primary and the others follow it.
# Each server announces its stable DNS name (its Pod's, via the headless Service redis-ha), not its
# IP, which changes when the Pod is recreated.
set -eu
self="${POD_NAME}.redis-ha"
primary=""
for n in 0 1 2; do
  primary=$(redis-cli -h "redis-sentinel-${n}.redis-sentinel" -p 26379 --raw \
    sentinel get-master-addr-by-name mymaster 2>/dev/null | head -n 1) || primary=""
  [ -n "$primary" ] && break
done
if [ -z "$primary" ]; then
  primary="redis-ha-0.redis-ha"
fi
set -- redis-server /etc/redis-ha/redis.conf \
  --requirepass "$REDIS_PASSWORD" --masterauth "$REDIS_PASSWORD" \
  --replica-announce-ip "$self"
if [ "$primary" != "$self" ]; then
  set -- "$@" --replicaof "$primary" 6379
fi
exec "$@"
