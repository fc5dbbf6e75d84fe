#!/usr/bin/env bash
# Builds the Python and JavaScript plugins into plugins/dist/<name>.wasm with the pinned
# toolchains of plugins/toolchains.sh (installed first if needed). A plugin is a folder
# plugins/<name>/ holding app.py (Python, componentize-py) or app.js (JavaScript, jco with
# the QuickJS backend). A plugin is rebuilt only when its folder, its SDK helper (sdk/python
# or sdk/js), wit/ or the toolchain pins are newer than its output.
# Usage: plugins/build-guests.sh [--force] [name...]   (default: every Python and JS plugin)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
toolchains=${SLUICE_TOOLCHAINS:-${HOME:-/root}/.cache/sluice/toolchains}
dist=$root/plugins/dist
force=false
names=()
for arg in "$@"; do
    case $arg in
        --force) force=true ;;
        -h | --help) sed -n '2,7p' "$0"; exit 0 ;;
        *) names+=("$arg") ;;
    esac
done

"$root/plugins/toolchains.sh" --quiet

if [[ ${#names[@]} == 0 ]]; then
    for dir in "$root"/plugins/*/; do
        [[ -f $dir/app.py || -f $dir/app.js ]] && names+=("$(basename "$dir")")
    done
fi

# True when $1 is missing or older than any file of the given paths.
stale() {
    local out=$1
    shift
    $force || [[ ! -f $out ]] || [[ -n $(find "$@" -type f -newer "$out" -print -quit) ]]
}

build_python() {
    local name=$1 out=$2 stage rc=0
    # componentize-py writes __pycache__ next to the sources it imports: build from a copy.
    stage=$(mktemp -d)
    cp -R "$root/plugins/$name/." "$stage/"
    cp "$root/sdk/python/sluice_plugin.py" "$stage/"
    (cd "$stage" && env -u VIRTUAL_ENV RUST_BACKTRACE=0 \
        "$toolchains/python/bin/componentize-py" --quiet -d "$root/wit" -w transform \
        componentize app -p "$stage" -o "$out.tmp") || rc=$?
    rm -rf "$stage"
    return $rc
}

build_js() {
    local name=$1 out=$2
    # --cwd makes the repo the module root, so app.js can import ../../sdk/js/sluice.js;
    # jco needs absolute paths with it. WASI stays imported: the host decides what it grants
    # (clocks read zero unless the feature set grants them; no files, network or env).
    "$toolchains/js/node_modules/.bin/jco" componentize "$root/plugins/$name/app.js" \
        --cwd "$root" --wit "$root/wit" --world-name transform \
        --backend quickjs --backend-qjs-disable-async \
        -o "$out.tmp" >/dev/null
}

mkdir -p "$dist"
pins=("$toolchains/python/.sluice-pins" "$toolchains/js/.sluice-lock")  # rewritten on install
failed=0
for name in "${names[@]}"; do
    dir=$root/plugins/$name
    out=$dist/$name.wasm
    if [[ -f $dir/app.py ]]; then
        lang=python sdk=$root/sdk/python
    elif [[ -f $dir/app.js ]]; then
        lang=js sdk=$root/sdk/js
    else
        echo "build-guests: $name: no plugins/$name/app.py or app.js" >&2
        failed=1
        continue
    fi
    if ! stale "$out" "$dir" "$sdk" "$root/wit" "${pins[@]}"; then
        echo "build-guests: $name: up to date"
        continue
    fi
    start=$EPOCHREALTIME
    rm -f "$out.tmp"
    if "build_$lang" "$name" "$out" && [[ -s $out.tmp ]]; then
        mv "$out.tmp" "$out"
        secs=$(awk "BEGIN { printf \"%.1f\", $EPOCHREALTIME - $start }")
        echo "build-guests: $name: built ${out#"$root"/} ($(stat -c %s "$out") bytes, $secs s)"
    else
        rm -f "$out.tmp"
        echo "build-guests: $name: build failed" >&2
        failed=1
    fi
done
exit $failed
