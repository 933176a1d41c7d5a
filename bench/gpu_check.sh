#!/usr/bin/env bash
# One short call on a lent H100/H200 (at most ~9 minutes: run it with timeout_s 600): the models' CUDA
# tests, then the FFHQ 256 UNet at batch 1-32 in fp32 / tf32 / bf16 / bf16+compile, with images/s at
# 100 NFE and the fraction of the bf16 roofline (387.9 GFLOP per 256x256 forward). Writes its logs and
# JSON under $OUT (or bench/results).
#
# The device image has its own python3 with CUDA PyTorch, safetensors, tqdm, typer and pytest; the
# project is used from the working tree through PYTHONPATH (nothing is installed). The CUDA tests use
# the small reference vectors of tests/data/testvectors, which travel with the working tree (the test
# session expands them; DIFFPIR_TESTVECTORS may name a folder with the full set instead).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-bench/results}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py="${PYTHON:-python3}"

{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  "$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
} 2>&1 | tee "$out/gpu_env.txt"

# CUDA numerics of the fast paths against the fp32 reference (small vectors).
timeout 120 "$py" -m pytest tests/core/models/test_inference.py -m gpu -q -p no:cacheprovider 2>&1 \
  | tee "$out/gpu_tests.txt"

# Forward speed; --max-seconds keeps the whole script inside one 10-minute call.
timeout 400 "$py" bench/unet_forward.py --device cuda --configs ffhq_256 --batch-sizes 1,2,4,8,16,32 \
  --modes fp32,tf32,bf16,bf16+compile --warmup 2 --repeats 5 --min-seconds 1.0 --max-seconds 300 \
  --out "$out/unet_forward_gpu.json" 2>&1 | tee "$out/unet_forward_gpu.txt"
