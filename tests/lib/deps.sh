# Sourced by tests/run.sh and deploy/demo.sh: installs the Debian packages that
# Meridian needs to build, test and demo, when they are missing. Needs root
# for the install; without root it only reports what is missing.
MERIDIAN_PACKAGES="build-essential cmake pkg-config clang libuv1-dev libpq-dev
  libcurl4-openssl-dev libjansson-dev libcriterion-dev node-llhttp libssl-dev
  postgresql-15 postgresql-client-15 pdns-server pdns-backend-sqlite3 etcd-server
  dnsutils python3 python3-psycopg2 sqlite3 curl iproute2 iptables procps util-linux"

mrd_install_deps() {
    local missing=""
    for p in $MERIDIAN_PACKAGES; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
            missing="$missing $p"
    done
    [ -z "$missing" ] && return 0
    if [ "$(id -u)" != 0 ]; then
        echo "missing packages:$missing (run as root to install them)" >&2
        return 1
    fi
    echo "installing:$missing" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >&2
}
