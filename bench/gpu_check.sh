#!/usr/bin/env bash
# One prepared call on a lent H100/H200 (about 8 minutes; run it with timeout_s 600). Every step has its own
# timeout and writes its log and JSON under $OUT (or bench/results); a step that cannot run there (a missing
# package) records why in $OUT/gpu_check.json instead of failing the rest. Steps:
#   1. environment (GPU, driver, torch) and the models' CUDA tests (fast paths against the fp32 reference);
#   2. the FFHQ 256 UNet forward (random weights) at batch 1/8/32 in fp32, fast32 (SDPA + channels_last),
#      bf16 (channels_last) and bf16+compile, with the share of the bf16 roofline (387.9 GFLOP per forward);
#   3. the sampler's images/s at 100 NFE, FFHQ 256 size, batch 8: the reference's per-image loop, the
#      bit-for-bit reference numerics and the fast default (bench/sampler.py --device cuda);
#   4. a short evaluate job (demo prior, 16 tiles, 4 shards, 20 NFE) through dask_cuda.LocalCUDACluster (`diffpir run`).
#
# The device image has CUDA PyTorch, numpy, scipy, scikit-image, safetensors, typer and pytest, not pydantic,
# prefect, dask or zarr. Steps 3-4 need them as wheels: where pip works (this repo's root), run
#   python3 -m pip download --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl pydantic==2.14.4   # step 3
#   ... and for step 4 prefect==3.9.1 prefect-dask==0.3.7 dask-cuda zarr==3.1.6 (with their deps)
# and name .whl in the run's carry (64 MiB at most); this script installs them into /tmp/site first.
# The project itself is used from the working tree through PYTHONPATH (nothing is installed).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-bench/results}"
mkdir -p "$out"
py="${PYTHON:-python3}"
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
status="$out/gpu_check.steps"
: > "$status"

step() {  # step NAME SECONDS COMMAND...: run with a timeout, log to $out/NAME.txt, record the exit status
  local name=$1 seconds=$2
  shift 2
  local start=$SECONDS
  timeout "$seconds" "$@" > "$out/$name.txt" 2>&1
  local rc=$?
  echo "$name $rc $((SECONDS - start))" >> "$status"
  tail -n 25 "$out/$name.txt"
}

needs() {  # needs NAME MODULE...: skip step NAME (recorded as rc 'skipped') when a module is missing
  local name=$1
  shift
  if ! "$py" -c "import importlib, sys; [importlib.import_module(m) for m in sys.argv[1:]]" "$@" 2>/dev/null; then
    echo "$name skipped 0 missing:$*" >> "$status"
    return 1
  fi
}

{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  "$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
} > "$out/gpu_env.txt" 2>&1
cat "$out/gpu_env.txt"

step gpu_tests 90 "$py" -m pytest tests/core/models/test_inference.py -m gpu -q -p no:cacheprovider

step unet_forward 240 "$py" bench/unet_forward.py --device cuda --configs ffhq_256 --batch-sizes 1,8,32 \
  --modes fp32,fast32,bf16,bf16+compile --warmup 2 --repeats 5 --min-seconds 0.5 --max-seconds 200 \
  --out "$out/unet_forward_gpu.json"

if needs sampler pydantic skimage; then
  step sampler 150 "$py" -m bench.sampler --device cuda --model ffhq_256 --images 8 --batches 8 --nfe 100 \
    --networks prior --out "$out/sampler_gpu.json"
fi

if needs dask_cuda_job prefect dask_cuda zarr; then
  job="/tmp/gpu_check_job"  # the store stays on the machine; its log and record come back
  mkdir -p "$job/input"
  "$py" -c "
import sys; from PIL import Image; from diffpir_core.training.data import held_out_tiles
for k, (name, tile) in enumerate(list(held_out_tiles(64).items())[:16]): Image.fromarray(tile).save(f'{sys.argv[1]}/{name}.png')
" "$job/input"
  cat > "$job/job.yaml" <<YAML
input: $job/input
output: $job/store
task: {kind: deblur}
prior: demo
sampler: {iter_num: 20}
shard_size: 4
batch_size: 4
device: cuda
runner: {kind: dask, cluster_class: dask_cuda.LocalCUDACluster, cluster_kwargs: {n_workers: 1}}
YAML
  cp "$job/job.yaml" "$out/dask_cuda_job.yaml"
  export PREFECT_HOME="$job/prefect" PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_UI_ENABLED=false
  step dask_cuda_job 120 "$py" -m diffpir_flow.cli.app run "$job/job.yaml"
fi

"$py" - "$status" "$out/gpu_check.json" <<'PY'
import json, sys
steps = {}
for line in open(sys.argv[1]):
    name, rc, seconds, *why = line.split()
    steps[name] = {"rc": rc, "seconds": int(seconds), **({"why": " ".join(why)} if why else {})}
json.dump({"steps": steps}, open(sys.argv[2], "w"), indent=2)
print(json.dumps(steps))
PY
