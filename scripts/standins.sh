#!/usr/bin/env bash
# Local stand-ins for the pinned official base images, for machines that reach no
# container registry (package registries only).
#
# For each base tag the Dockerfiles pin (their `ARG PYTHON_IMAGE=` / `ARG POSTGRES_IMAGE=`
# defaults, or $PYTHON_IMAGE / $POSTGRES_IMAGE when set): keep it when the engine already
# has it, pull it when a registry answers, and otherwise build a stand-in under the same
# tag from Debian's packages:
#   python:*   Debian's python3 in a venv at /opt/python (python, python3, pip on PATH), like
#              the official slim image's /usr/local/bin/python, from the suite that ships the
#              tag's version: bookworm 3.11, trixie 3.13, sid 3.14 (TARGET_PYTHON_IMAGE=python:3.13-slim
#              also builds the image targets on Python 3.13 are built from).
#   postgres:* Debian bookworm's postgresql-15 with an entrypoint honouring the official
#              image's contract (POSTGRES_USER/PASSWORD/DB, /docker-entrypoint-initdb.d,
#              `postgres` CMD with argument passthrough, runs as user postgres).
# Stand-ins carry the label org.benchlab.standin=<what it really is>, and trust the host's
# CA certificates so package installs inside builds verify TLS. The Debian mirror is
# read from this host's apt sources at run time. Reruns are fast: existing tags are kept
# (--force rebuilds).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BASE_TAG=benchlab-standin/debian:bookworm
SUITE=bookworm
FORCE=0
[ "${1:-}" = "--force" ] && FORCE=1
export DOCKER_BUILDKIT=0   # the classic builder: no buildx plugin needed

log() { echo "standins: $*" >&2; }

# The one default of a build arg across the Dockerfiles; disagreeing pins are an error.
pinned() {
    local arg=$1 values
    values=$(sed -n "s/^ARG $arg=//p" "$ROOT"/db/Dockerfile "$ROOT"/services/*/Dockerfile \
        "$ROOT"/loadgen/Dockerfile 2>/dev/null | sort -u)
    if [ "$(printf '%s\n' "$values" | grep -c .)" != 1 ]; then
        log "the Dockerfiles disagree on (or lack) ARG $arg: ${values:-none}"
        exit 1
    fi
    printf '%s\n' "$values"
}

have() { docker image inspect "$1" >/dev/null 2>&1; }

# "URI SUITE" for every enabled deb source of this host (one-line and deb822 formats).
host_sources() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$f" | awk '$1 == "deb" && NF >= 3 { print $2, $3 }'
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk '
            function flush() {
                if (types ~ /(^| )deb( |$)/ && enabled !~ /^(no|false)$/)
                    for (i = 1; i <= nu; i++) for (j = 1; j <= ns; j++) print u[i], s[j]
                types = ""; enabled = ""; nu = 0; ns = 0
            }
            /^[ \t]*#/ { next }
            /^[ \t]*$/ { flush(); next }
            { key = tolower($1); sub(/:$/, "", key); $1 = "" }
            key == "types" { types = $0 }
            key == "enabled" { enabled = $2 }
            key == "uris" { nu = split($0, u, " ") }
            key == "suites" { ns = split($0, s, " ") }
            END { flush() }
        ' "$f"
    done
}

# The host's Debian mirror (a suite without "-") and security mirror ("-security" suite).
mirror_for() {
    local want=$1
    host_sources | awk -v want="$want" '
        want == "main" && $2 !~ /-/ && $2 !~ /\// { print $1; exit }
        want == "security" && $2 ~ /-security$/ { print $1; exit }
    '
}

build_base() {
    have "$BASE_TAG" && [ $FORCE = 0 ] && return
    local mirror security rootfs
    mirror=$(mirror_for main)
    security=$(mirror_for security)
    if [ -z "$mirror" ]; then
        log "no Debian mirror found in this host's apt sources"
        exit 1
    fi
    rootfs=$(mktemp -d /var/tmp/benchlab-rootfs.XXXXXX)
    trap 'rm -rf "$rootfs"' EXIT
    log "debootstrap $SUITE (minbase) from the host's mirror"
    debootstrap --variant=minbase --include=ca-certificates,passwd "$SUITE" "$rootfs" "$mirror" \
        >"$rootfs.log" 2>&1 || { tail -n 20 "$rootfs.log" >&2; exit 1; }
    rm -f "$rootfs.log"
    {
        echo "Types: deb"
        echo "URIs: $mirror"
        if [ "$SUITE" = sid ]; then echo "Suites: sid"; else echo "Suites: $SUITE $SUITE-updates"; fi
        echo "Components: main"
        echo "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"
        if [ -n "$security" ] && [ "$SUITE" != sid ]; then
            echo
            echo "Types: deb"
            echo "URIs: $security"
            echo "Suites: $SUITE-security"
            echo "Components: main"
            echo "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"
        fi
    } >"$rootfs/etc/apt/sources.list.d/debian.sources"
    : >"$rootfs/etc/apt/sources.list"
    # Slim like the official images: no docs, man pages or translations; no recommends.
    printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
        'path-exclude /usr/share/man/*' 'path-exclude /usr/share/locale/*' \
        'path-exclude /usr/share/info/*' >"$rootfs/etc/dpkg/dpkg.cfg.d/slim"
    echo 'APT::Install-Recommends "false";' >"$rootfs/etc/apt/apt.conf.d/no-recommends"
    # Trust what the host trusts (a TLS-inspecting egress proxy's CA, for one).
    cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
    cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/" 2>/dev/null || true
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
        "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/*
    log "importing $BASE_TAG"
    tar -C "$rootfs" --numeric-owner -c . | docker import \
        --change 'ENV LANG=C.UTF-8' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["bash"]' - "$BASE_TAG" >/dev/null
    rm -rf "$rootfs"
    trap - EXIT
}

# docker build of a stand-in from a Dockerfile on stdin; $2 = context dir.
build_image() {
    local tag=$1 ctx=$2
    log "building stand-in $tag"
    if ! docker build --network host -t "$tag" -f - "$ctx" >"$ctx.log" 2>&1; then
        tail -n 30 "$ctx.log" >&2
        exit 1
    fi
    rm -f "$ctx.log"
}

python_standin() {
    local tag=$1 ctx want
    want=$(printf '%s\n' "${tag#python:}" | grep -oE '^3\.[0-9]+' || true)  # the suite must ship it
    ctx=$(mktemp -d)
    cp /etc/ssl/certs/ca-certificates.crt "$ctx/host-ca.crt"
    build_image "$tag" "$ctx" <<EOF
FROM $BASE_TAG
LABEL org.benchlab.standin="debian $SUITE python3 in a venv, standing in for $tag"
COPY host-ca.crt /usr/local/share/ca-certificates/benchlab-host-bundle.crt
RUN set -eux; \\
    apt-get update; \\
    apt-get install -y --no-install-recommends python3 python3-venv netbase tzdata; \\
    rm -rf /var/lib/apt/lists/*; \\
    update-ca-certificates; \\
    python3 -m venv /opt/python; \\
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt /opt/python/bin/pip install --no-cache-dir -q \\
        --upgrade pip setuptools wheel; \\
    for exe in python python3 pip pip3; do ln -s /opt/python/bin/\$exe /usr/local/bin/\$exe; done; \\
    python --version; pip --version; \
    python -c "import sys; v = '%d.%d' % sys.version_info[:2]; assert v == '$want' or not '$want', (v, '$want')"
ENV PATH=/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \\
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \\
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
CMD ["python3"]
EOF
    rm -rf "$ctx"
}

postgres_standin() {
    local tag=$1 ctx major
    major=$(printf '%s\n' "${tag#*:}" | cut -d. -f1 | cut -d- -f1)
    ctx=$(mktemp -d)
    postgres_entrypoint >"$ctx/docker-entrypoint.sh"
    chmod 755 "$ctx/docker-entrypoint.sh"
    build_image "$tag" "$ctx" <<EOF
FROM $BASE_TAG
LABEL org.benchlab.standin="debian $SUITE postgresql-$major, standing in for $tag"
RUN set -eux; \\
    groupadd -r postgres --gid=999; \\
    useradd -r -g postgres --uid=999 --home-dir=/var/lib/postgresql --shell=/bin/bash postgres; \\
    install -d -o postgres -g postgres -m 1777 /var/lib/postgresql; \\
    apt-get update; \\
    apt-get install -y --no-install-recommends postgresql-common; \\
    sed -ri 's/#(create_main_cluster) .*\$/\\1 = false/' /etc/postgresql-common/createcluster.conf; \\
    apt-get install -y --no-install-recommends postgresql-$major; \\
    rm -rf /var/lib/apt/lists/*; \\
    sed -ri "s/^#?listen_addresses\\s*=\\s*\\S+/listen_addresses = '*'/" \\
        /usr/share/postgresql/$major/postgresql.conf.sample; \\
    install -d -o postgres -g postgres -m 3777 /var/run/postgresql; \\
    install -d -o postgres -g postgres -m 1777 /var/lib/postgresql/data; \\
    mkdir /docker-entrypoint-initdb.d
ENV PG_MAJOR=$major \\
    PGDATA=/var/lib/postgresql/data \\
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/lib/postgresql/$major/bin
VOLUME /var/lib/postgresql/data
COPY docker-entrypoint.sh /usr/local/bin/
ENTRYPOINT ["docker-entrypoint.sh"]
STOPSIGNAL SIGINT
EXPOSE 5432
CMD ["postgres"]
EOF
    rm -rf "$ctx"
}

# The stand-in's entrypoint: the official image's documented behaviour, written afresh.
postgres_entrypoint() {
    cat <<'EOF'
#!/usr/bin/env bash
# Stand-in for the official postgres image's entrypoint: first start initialises
# $PGDATA as $POSTGRES_USER with $POSTGRES_PASSWORD, creates $POSTGRES_DB, runs
# /docker-entrypoint-initdb.d/*.sh|*.sql|*.sql.gz, then execs the server as postgres.
set -Eeuo pipefail

if [ "${1:0:1}" = "-" ]; then set -- postgres "$@"; fi
[ "$1" = postgres ] || exec "$@"

if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
export PGPORT="${PGPORT:-5432}"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "${POSTGRES_HOST_AUTH_METHOD:-}" != trust ]; then
        echo "error: database is uninitialized and POSTGRES_PASSWORD is not set" >&2
        exit 1
    fi
    mkdir -p "$PGDATA" && chmod 700 "$PGDATA"
    # shellcheck disable=SC2086  # POSTGRES_INITDB_ARGS is a list of flags
    initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "${POSTGRES_PASSWORD:-}") \
        ${POSTGRES_INITDB_ARGS:-} -D "$PGDATA" >/dev/null
    auth=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}
    printf '\nhost all all all %s\n' "$auth" >>"$PGDATA/pg_hba.conf"
    # The temporary server listens on the unix socket only: nobody sees a half-made DB.
    pg_ctl -D "$PGDATA" -w -o "$(printf '%q ' "${@:2}") -c listen_addresses= -p $PGPORT" start >/dev/null
    export PGUSER="$POSTGRES_USER" PGPASSWORD="${POSTGRES_PASSWORD:-}"
    if [ "$POSTGRES_DB" != postgres ]; then
        echo 'CREATE DATABASE :"db";' | psql -v ON_ERROR_STOP=1 -q --dbname postgres --set db="$POSTGRES_DB"
    fi
    # shellcheck disable=SC1090  # init scripts are the user's
    for f in /docker-entrypoint-initdb.d/*; do
        case "$f" in
            *.sh) echo "running $f" >&2; if [ -x "$f" ]; then "$f"; else . "$f"; fi ;;
            *.sql) echo "running $f" >&2; psql -v ON_ERROR_STOP=1 -q --dbname "$POSTGRES_DB" -f "$f" ;;
            *.sql.gz) echo "running $f" >&2; gunzip -c "$f" | psql -v ON_ERROR_STOP=1 -q --dbname "$POSTGRES_DB" ;;
            *) ;;
        esac
    done
    pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    unset PGPASSWORD
    echo "database initialised; starting the server" >&2
fi

exec "$@"
EOF
}

# The Debian suite whose python3 is the version a python tag names (bookworm otherwise).
suite_for() {
    case "$1" in
        *-bookworm | python:3.11*) echo bookworm ;;
        *-trixie | python:3.13*) echo trixie ;;
        python:3.14*) echo sid ;;
        *) echo bookworm ;;
    esac
}

ensure() {
    local tag=$1 kind=$2
    if have "$tag" && [ $FORCE = 0 ]; then
        log "$tag present"
        return
    fi
    if [ $FORCE = 0 ] && timeout 60 docker pull -q "$tag" >/dev/null 2>&1; then
        log "$tag pulled"
        return
    fi
    if [ "$kind" = python ]; then SUITE=$(suite_for "$tag"); else SUITE=bookworm; fi
    BASE_TAG=benchlab-standin/debian:$SUITE
    build_base
    "${kind}_standin" "$tag"
}

ensure "${PYTHON_IMAGE:-$(pinned PYTHON_IMAGE)}" python
if [ -n "${TARGET_PYTHON_IMAGE:-}" ]; then ensure "$TARGET_PYTHON_IMAGE" python; fi
ensure "${POSTGRES_IMAGE:-$(pinned POSTGRES_IMAGE)}" postgres
