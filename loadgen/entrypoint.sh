#!/bin/sh
# Runs the command as an unprivileged user, never as root, so that the files a run writes
# belong to the person who typed `docker compose up`, with no mkdir or chown beforehand.
#
# Who that is: the owner of the results folder ($BENCHLAB_OUT, bind-mounted from the host)
# when it is not root; else the owner of the checkout (mounted read-only at
# $BENCHLAB_CHECKOUT: compose runs from it, so it is the invoking user's); else, when root
# owns both, the image's own user benchlab (uid 10001). A results folder root owns and that
# is empty (the one Docker creates when ./results does not exist) is given to that user
# first; one root owns that already holds files is left alone, and the commands that write
# there refuse in one line with the fix.
#
# Why root must never run anything here: compose gives this container the host's PID
# namespace (to sample Postgres's CPU from /proc), and root in it could signal every
# process on the host, PID 1 included. The container starts as root only for the chown and
# the switch below; compose leaves it no capability but CAP_CHOWN, CAP_SETUID and
# CAP_SETGID, which the kernel clears when setpriv switches to a non-zero uid, and
# no-new-privileges keeps a setuid binary from bringing any back.
set -eu
out=${BENCHLAB_OUT:-/results}
shown=${BENCHLAB_RESULTS_HOST:-$out}  # where the folder is on the host, for the messages
checkout=${BENCHLAB_CHECKOUT:-}

if [ "$(id -u)" != 0 ]; then
    exec "$@"  # already unprivileged (`docker run --user ...`)
fi

# "uid gid" of a path, or "0 0" when it is missing
owner_of() { stat -c '%u %g' "$1" 2>/dev/null || echo "0 0"; }

read -r out_uid out_gid <<EOT
$(owner_of "$out")
EOT
read -r co_uid co_gid <<EOT
$(owner_of "${checkout:-/nonexistent}")
EOT

uid=10001
gid=10001
if [ "$out_uid" != 0 ]; then
    uid=$out_uid
    # a folder of group root (gid 0) gets no root group either: the image's group instead
    [ "$out_gid" = 0 ] || gid=$out_gid
elif [ "$co_uid" != 0 ]; then
    uid=$co_uid
    [ "$co_gid" = 0 ] || gid=$co_gid
fi
if [ "$out_uid" = 0 ] && [ -d "$out" ] && [ -z "$(ls -A "$out")" ]; then
    chown "$uid:$gid" "$out"  # Docker made it for the bind mount: it is the user's
    out_uid=$uid
fi

# With a root-owned folder, the commands that write into it refuse in one line with the fix
# (the user cannot write there unless the folder is open to all); the others run as that user.
case "${1:-} ${2:-}" in
    "benchlab run" | "benchlab report" | "benchlab compare")
        if [ "$out_uid" = 0 ] && ! setpriv --reuid="$uid" --regid="$gid" --clear-groups -- test -w "$out"; then
            # shellcheck disable=SC2016 # $(id -u) is for the user's shell, not this one
            printf 'benchlab: the results folder %s belongs to root, holds files already and the loadgen never runs as root, so it cannot write there; give it to your user (chown $(id -u):$(id -g) %s; as root: chown 10001:10001 %s) or set BENCHLAB_RESULTS to a folder you own\n' \
                "$shown" "$shown" "$shown" >&2
            exit 2
        fi
        ;;
esac

export HOME=/tmp
exec setpriv --reuid="$uid" --regid="$gid" --clear-groups -- "$@"
