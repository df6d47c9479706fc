#!/usr/bin/env bash
# The real-time check on a bare GPU machine: set up what it lacks, then run benchmarks/bench_realtime.py on
# the 1.3B shape at 480x368 and 832x480, within 8 minutes, writing JSON and logs under $OUT.
#
#   bash benchmarks/gpu_check.sh --prepare      # here, online or with a local index: fetch the wheels
#   bash benchmarks/gpu_check.sh                 # there: OUT=/some/dir (default ./gpu-check)
#
# The GPU image has Python 3.12 with PyTorch, transformers, numpy, OpenCV and Pillow, but not diffusers
# or pydantic: --prepare downloads those wheels (for CPython 3.12, manylinux x86_64) into .gpu-wheels/
# (git-ignored); carry that folder to the machine. There they are unpacked, offline and without their
# dependencies, into /tmp/ardrag-site beside the image's packages (its CUDA build of PyTorch). Where
# everything imports already (this repository's own .venv, say), nothing is installed.
#
# Settings (environment): SHAPE (1.3b), DEVICE (cuda), DTYPE (bfloat16 on a GPU), VAE (wan; tiny on a CPU
# rehearsal, where the real VAE takes minutes per frame at 480x368), FRAMES (latent frames per
# session, 21 = 81 pixel frames), REPEATS (1), VARIANTS (per run), LIMIT_S (seconds per run: 200 at
# 480x368, 60 with guidance 5 at 480x368, 170 at 832x480: 7 minutes with the set-up), PYTHON (python3). A CPU rehearsal:
#   DEVICE=cpu SHAPE=small VAE=tiny FRAMES=3 REPEATS=1 VARIANTS=reference,fast bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=.gpu-wheels
NEEDED=(diffusers==0.42.1 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types typing-inspection
        typing-extensions==4.16.0 importlib-metadata)

if [[ "${1:-}" == "--prepare" ]]; then
    python -m pip download --no-deps -d "$WHEELS" --python-version 3.12 --only-binary=:all: \
        --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
        "${NEEDED[@]}" zipp
    du -sh "$WHEELS"
    exit 0
fi

OUT=${OUT:-$PWD/gpu-check}
SHAPE=${SHAPE:-1.3b}
DEVICE=${DEVICE:-cuda}
FRAMES=${FRAMES:-21}
REPEATS=${REPEATS:-1}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
: >"$LOG"
started=$SECONDS

SITE=""
if ! "$PY" -c "import diffusers, pydantic" >/dev/null 2>&1; then
    echo "setting up: the wheels of $WHEELS into /tmp/ardrag-site for $PY" | tee -a "$LOG"
    "$PY" -m pip install -q --no-index --no-deps --target /tmp/ardrag-site "$WHEELS"/*.whl >>"$LOG" 2>&1 || {
        echo "could not install the wheels of $WHEELS (run --prepare here and carry it); see $LOG" >&2
        exit 1
    }
    SITE=/tmp/ardrag-site
fi
export PYTHONPATH=$PWD${SITE:+:$SITE}${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
"$PY" - >"$OUT/env.json" <<'EOF'
import json, platform, torch, diffusers, pydantic, transformers
info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "diffusers": diffusers.__version__, "pydantic": pydantic.VERSION, "transformers": transformers.__version__,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
print(json.dumps(info))
EOF
cat "$OUT/env.json" | tee -a "$LOG"

# Per resolution: the variants to compare and the wall-clock cap (the bench writes its JSON after every
# variant, so a cap that cuts it short keeps what was measured).
run() {  # name res guidance frames variants limit
    local name=$1 res=$2 guidance=$3 frames=$4 variants=$5 limit=$6
    echo "== $SHAPE at $res on $DEVICE, guidance $guidance: $variants (cap ${limit}s)" | tee -a "$LOG"
    timeout -k 20 --signal=INT "$limit" "$PY" benchmarks/bench_realtime.py --shape "$SHAPE" \
        --device "$DEVICE" ${DTYPE:+--dtype "$DTYPE"} ${VAE:+--vae "$VAE"} --res "$res" --frames "$frames" \
        --repeats "$REPEATS" --guidance "$guidance" --variants "$variants" --out "$OUT/$name.json" 2>&1 \
        | grep --line-buffered -v "CLIPImageProcessor" | tee -a "$LOG" \
        || echo "(stopped at the cap or failed: see $LOG)" | tee -a "$LOG"
}
ALL=reference,fast,-ring_cache,-rope_once,-cross_cache,-decode_stream,sdpa=flash,sdpa=efficient,compile=default,compile=reduce-overhead
run "realtime-$SHAPE-480x368" 480x368 1 "$FRAMES" "${VARIANTS:-$ALL}" "${LIMIT_S:-200}"
run "realtime-$SHAPE-480x368-cfg" 480x368 5 "$(( FRAMES < 9 ? FRAMES : 9 ))" "${VARIANTS:-fast,-batched_cfg}" "${LIMIT_S:-60}"
run "realtime-$SHAPE-832x480" 832x480 1 "$FRAMES" "${VARIANTS:-reference,fast,compile=reduce-overhead}" "${LIMIT_S:-170}"
echo "done in $((SECONDS - started)) s; results in $OUT" | tee -a "$LOG"
