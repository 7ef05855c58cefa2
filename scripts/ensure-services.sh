#!/usr/bin/env bash
# Make sure the local PostgreSQL and Redis that the tests use are running, and the RabbitMQ node
# where it is installed (its tests are skipped without rabbitmqctl); start them if not.
set -euo pipefail

pg_up() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }
redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }

if ! pg_up; then
  echo "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  for _ in $(seq 1 30); do pg_up && break; sleep 1; done
fi
if ! redis_up; then
  echo "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 1 30); do redis_up && break; sleep 1; done
fi
if command -v rabbitmqctl >/dev/null && command -v rabbitmq-server >/dev/null; then
  rabbit_up() { rabbitmqctl -q await_startup --timeout 5 >/dev/null 2>&1; }
  if ! rabbit_up; then
    echo "starting RabbitMQ"
    rabbitmq-server -detached || true
    for _ in $(seq 1 60); do rabbit_up && break; sleep 1; done
  fi
  rabbit_up || { echo "RabbitMQ is installed but does not answer (rabbitmqctl await_startup)" >&2; exit 1; }
fi
pg_up || { echo "PostgreSQL is not reachable on 127.0.0.1:5432" >&2; exit 1; }
redis_up || { echo "Redis is not reachable on 127.0.0.1:6379" >&2; exit 1; }
echo "PostgreSQL and Redis are up$(command -v rabbitmqctl >/dev/null && echo ", and RabbitMQ")"
