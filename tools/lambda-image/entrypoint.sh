#!/bin/sh
# Image entry point: `<image> module.handler` (how SAM and `docker run` pass the handler).
if [ $# -ge 1 ]; then
    export _HANDLER="$1"
    shift
fi
exec /var/runtime/bootstrap "$@"
