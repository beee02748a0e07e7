#!/bin/sh
# Runs the command as an unprivileged user, never as root: as the owner of the results
# folder ($BENCHLAB_OUT, bind-mounted from the host), so the files a run writes are that
# user's, or as the image's own user benchlab (uid 10001) when root owns the folder (one
# Docker created because it did not exist, or one made by root).
#
# Why root must never run anything here: compose gives this container the host's PID
# namespace (to sample Postgres's CPU from /proc), and root in it could signal every
# process on the host, PID 1 included. The container starts as root only to make the
# choice below; compose leaves it no capability but CAP_SETUID and CAP_SETGID (for
# setpriv), which the kernel clears when setpriv switches to a non-zero uid, and
# no-new-privileges keeps a setuid binary from bringing any back.
set -eu
out=${BENCHLAB_OUT:-/results}
shown=${BENCHLAB_RESULTS_HOST:-$out}  # where the folder is on the host, for the messages

if [ "$(id -u)" != 0 ]; then
    exec "$@"  # already unprivileged (`docker run --user ...`)
fi

uid=10001
gid=10001
owner=$(stat -c %u "$out" 2>/dev/null || echo 0)
if [ "$owner" != 0 ]; then
    uid=$owner
    # a folder of group root (gid 0) gets no root group either: the image's group instead
    [ "$(stat -c %g "$out")" = 0 ] || gid=$(stat -c %g "$out")
fi

# With a root-owned folder, the commands that write into it refuse in one line with the fix
# (uid 10001 cannot write there unless the folder is open to all); the others run as 10001.
case "${1:-} ${2:-}" in
    "benchlab run" | "benchlab report" | "benchlab compare")
        if [ "$owner" = 0 ] && ! setpriv --reuid="$uid" --regid="$gid" --clear-groups -- test -w "$out"; then
            # shellcheck disable=SC2016 # $(id -u) is for the user's shell, not this one
            printf 'benchlab: the results folder %s belongs to root and the loadgen never runs as root, so it cannot write there; give it to your user (mkdir -p %s && chown $(id -u):$(id -g) %s; as root: chown 10001:10001 %s) or set BENCHLAB_RESULTS to a folder you own\n' \
                "$shown" "$shown" "$shown" "$shown" >&2
            exit 2
        fi
        ;;
esac

export HOME=/tmp
exec setpriv --reuid="$uid" --regid="$gid" --clear-groups -- "$@"
