#!/bin/sh
# Start like the official redis image: bare options or a config file mean "run redis-server with them".
set -eu
case "${1:-}" in
-* | *.conf) set -- redis-server "$@" ;;
esac
exec "$@"
