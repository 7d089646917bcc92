#!/bin/sh
# One image, three commands (the chart runs each as its own container):
#   replica  - the supernode: API on DF_PORT (8002) and pieces on DF_DOWNLOAD_PORT (8001)
#   worker   - a Celery seed worker; further arguments go to `celery worker` (e.g. --concurrency 4)
#   migrate  - the audit database's migrations: alembic upgrade head
# exec everywhere: the process gets SIGTERM itself (the replica drains, Celery shuts down warm).
set -eu
command="${1:-replica}"
[ "$#" -gt 0 ] && shift
case "$command" in
  replica) exec python -m app "$@" ;;
  worker) exec celery -A workers.tasks worker -Q df-seed --without-gossip --without-mingle "$@" ;;
  migrate) exec alembic -c /app/alembic.ini upgrade head "$@" ;;
  *) exec "$command" "$@" ;;  # anything else runs as given (a shell for debugging, python -c ...)
esac
