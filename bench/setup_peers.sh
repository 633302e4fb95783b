#!/usr/bin/env bash
# The peers' environment for bench/throughput.py --peers: Celery, Dramatiq and the raw
# limits of ../shared/bench/peers, in bench/.venv (never in the project's own .venv),
# and the database role they write to.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/celery ]; then
  python3 -m venv .venv
  .venv/bin/pip install -q "celery==5.7.0" "dramatiq[rabbitmq]==2.2.1" "psycopg[binary]" sqlalchemy aio-pika py-spy
fi
psql -h 127.0.0.1 -U postgres -tc "SELECT 1 FROM pg_roles WHERE rolname = 'bench'" | grep -q 1 \
  || psql -h 127.0.0.1 -U postgres -c "CREATE ROLE bench LOGIN PASSWORD 'bench'"
psql -h 127.0.0.1 -U postgres -tc "SELECT 1 FROM pg_database WHERE datname = 'bench'" | grep -q 1 \
  || psql -h 127.0.0.1 -U postgres -c "CREATE DATABASE bench OWNER bench"
