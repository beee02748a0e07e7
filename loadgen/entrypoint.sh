#!/bin/sh
# Runs the command as the owner of the results folder ($BENCHLAB_OUT, bind-mounted from
# the host), so the files a run writes belong to whoever made that folder, not to root.
# Root starts this only to read that owner; a folder owned by root means root ran it.
set -eu
out=${BENCHLAB_OUT:-/results}
if [ "$(id -u)" = 0 ] && [ -d "$out" ]; then
    uid=$(stat -c %u "$out")
    gid=$(stat -c %g "$out")
    if [ "$uid" != 0 ]; then
        export HOME=/tmp
        exec setpriv --reuid="$uid" --regid="$gid" --clear-groups -- "$@"
    fi
fi
exec "$@"
