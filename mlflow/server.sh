#!/usr/bin/env bash
# One MLflow tracking server for a team or a cluster: runs in a PostgreSQL database, artifacts under one
# root, bound to 127.0.0.1 unless --host says otherwise (and then only with --allowed-hosts, so no other
# Host header reaches it).
#
#   mlflow/server.sh --backend postgresql://mlflow@dbhost/mlflow [--artifacts DIR|s3://...] \
#       [--host 0.0.0.0 --allowed-hosts node1,node1:5000] [--port 5000] [--workers 4]
#
# Workers then log with --tracking-uri http://HOST:PORT. The password of the database goes in ~/.pgpass
# or $PGPASSWORD, never on this command line (where `ps` shows it to every user of the machine).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
backend="" artifacts="$PWD/mlflow/server-artifacts" host=127.0.0.1 port=5000 workers=4 allowed=""
while [ $# -gt 0 ]; do
  case "$1" in
    --backend) backend=${2:?}; shift 2 ;;
    --artifacts) artifacts=${2:?}; shift 2 ;;
    --host) host=${2:?}; shift 2 ;;
    --port) port=${2:?}; shift 2 ;;
    --workers) workers=${2:?}; shift 2 ;;
    --allowed-hosts) allowed=${2:?}; shift 2 ;;
    -h|--help) usage ;;
    *) echo "error: unknown option $1" >&2; usage ;;
  esac
done
case "$backend" in
  postgresql://*|postgresql+*://*) ;;
  "") echo "error: --backend is required: a PostgreSQL URL such as postgresql://mlflow@dbhost/mlflow" >&2; exit 2 ;;
  *) # only the scheme is shown: whatever follows it may hold a password
     if [[ "$backend" =~ ^([A-Za-z][A-Za-z0-9+.-]*):// ]]; then shown="a ${BASH_REMATCH[1]}:// URL"
     else shown="not a URL"; fi
     echo "error: --backend ($shown) is not a PostgreSQL URL; fix: postgresql://user@host/db" >&2; exit 2 ;;
esac
# A password as SQLAlchemy (MLflow's reader) or libpq takes it: in the user-info (user:PW@, PW up to the first
# '@', quotes, spaces and '/' included; urllib reads up to the last '@', which this also catches) or as a
# query parameter (?password=, &sslpassword=, names in any case or percent-encoded). Either would be on the
# `mlflow server` command line, which `ps` shows to every user of the machine.
either() { local c out=""; for c in $(echo "$1" | fold -w1); do  # each letter also percent-encoded (%70, %50)
  out+="($c|%$(printf %02x "'$c")|%$(printf %02x "'${c^^}"))"; done; echo "$out"; }
shopt -s nocasematch  # names in any case; %2F and %2f alike
if [[ "$backend" =~ ^[^:]*://[^:/]*:[^@]*@ ]] \
   || [[ "$backend" =~ [?\&]($(either ssl))?$(either password)= ]]; then
  echo "error: --backend holds a password; fix: put it in ~/.pgpass or PGPASSWORD and drop it from the URL" >&2
  exit 2
fi
shopt -u nocasematch
if [ "$host" != 127.0.0.1 ] && [ "$host" != localhost ] && [ -z "$allowed" ]; then
  echo "error: --host=$host opens the server to the network; fix: also give --allowed-hosts with the names" \
       "clients use (e.g. --allowed-hosts $(hostname),$(hostname):$port)" >&2
  exit 2
fi
[ -x .venv/bin/mlflow ] || ./scripts/setup.sh
[[ "$artifacts" == *://* ]] || mkdir -p "$artifacts"
args=(server --backend-store-uri "$backend" --artifacts-destination "$artifacts" --host "$host" --port "$port"
      --workers "$workers")
[ -z "$allowed" ] || args+=(--allowed-hosts "$allowed")
echo "MLflow tracking server on http://$host:$port (runs: ${backend%%\?*}, artifacts: $artifacts)"
exec .venv/bin/mlflow "${args[@]}"
