#!/usr/bin/env bash
# The speed harness at real scale on one GPU (issue 8): Stable Diffusion 1.5's architecture at
# 512 px with random weights, bf16 autocast, then SDXL 1.0 base's full architecture at 1024 px (random
# weights, the train_text_to_image_lora_sdxl step as reference), then the mini shape for the GAN,
# style-learning and export parts. Writes OUTDIR/speed-sd15-cuda.json, OUTDIR/speed-sdxl-cuda.json,
# OUTDIR/speed-mini-cuda.json and a log.
# Usage: bench/gpu_check.sh OUTDIR     (about 10 minutes on an H100; nothing is downloaded)
set -u -o pipefail
out=${1:?usage: bench/gpu_check.sh OUTDIR}
mkdir -p "$out"
. assets/gpu_env.sh
python3 -c "import torch; print('device:', torch.cuda.get_device_name(0))" | tee "$out/log.txt" || exit 1
python3 bench/speed.py --shape sd15 --resolution 512 --device cuda --precision bf16 --batch 4 --steps 10 --repeats 3 \
  --parts museum,memory,sampling --images 4 --sample-steps 25 --json "$out/speed-sd15-cuda.json" >> "$out/log.txt" 2>&1
echo "sd15 rc=$?" | tee -a "$out/log.txt"
python3 bench/speed.py --shape sdxl --resolution 1024 --device cuda --precision bf16 --batch 2 --steps 10 --repeats 3 \
  --parts museum,memory --json "$out/speed-sdxl-cuda.json" >> "$out/log.txt" 2>&1
echo "sdxl rc=$?" | tee -a "$out/log.txt"
python3 bench/speed.py --shape mini --device cuda --precision bf16 --parts museum,sampling,style,gan,synth --images 32 \
  --gan-iters 20 --json "$out/speed-mini-cuda.json" >> "$out/log.txt" 2>&1
echo "mini rc=$?" | tee -a "$out/log.txt"
tail -c 3000 "$out/log.txt"
