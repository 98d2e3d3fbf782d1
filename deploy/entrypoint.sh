#!/bin/sh
# Entrypoint of the sn40l image:
#   head [ray start options]           a Ray head (GCS on 6379), in the foreground
#   worker HOST:PORT [ray start opts]  a Ray worker joining the head at HOST:PORT
#   ray ...                            any ray command (KubeRay starts pods with `ray start`)
#   sn40l ... | <sn40l subcommand> ... any sn40l command (`cluster up`, `sbatch`, `run`, ...)
#   (nothing)                          sn40l demo
set -eu
if [ "$#" -eq 0 ]; then
    exec sn40l demo
fi
cmd=$1
shift
case "$cmd" in
    head)
        exec ray start --head --port=6379 --dashboard-host=0.0.0.0 --disable-usage-stats \
            --block "$@" ;;
    worker)
        if [ "$#" -lt 1 ]; then
            echo "entrypoint: 'worker' needs the head's address, e.g. worker 10.0.0.1:6379" >&2
            exit 2
        fi
        address=$1
        shift
        exec ray start --address="$address" --disable-usage-stats --block "$@" ;;
    ray|sn40l)
        exec "$cmd" "$@" ;;
    *)
        exec sn40l "$cmd" "$@" ;;
esac
