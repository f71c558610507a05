#!/usr/bin/env bash
# Trains the three embedded defaults side by side on one GPU (how the committed assets were made):
#   studio-mini (diffusers pipeline), gan-mini (StyleGAN2-style G), evaluators (classifiers).
# Usage: assets/pretrain_gpu.sh OUTDIR [SCALE]  (SCALE multiplies every time budget; 1 = ~8 minutes)
set -u
out=${1:?usage: assets/pretrain_gpu.sh OUTDIR [SCALE]}
scale=${2:-1}
work=runs/gpu
mkdir -p "$work" "$out"
. assets/gpu_env.sh
s() { python3 -c "print(int($1 * $scale))"; }
dev=cuda; prec=bf16
python3 -c "import torch; print('device:', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')" | tee "$out/logs.txt"
python3 -c "import torch; torch.cuda.is_available() or exit(1)" || { dev=cpu; prec=fp32; }
start=$(date +%s)
python3 -m studio pretrain base --out "$work/studio-mini" --vae-seconds "$(s 100)" --unet-seconds "$(s 320)" \
  --device $dev --precision $prec --unet-batch 512 --unet-lr 6e-4 --vae-batch 128 --workers 6 \
  --log "$work/base_log.jsonl" > "$work/base.out" 2>&1 &
p1=$!
python3 -m studio pretrain gan --out "$work/gan-mini" --seconds "$(s 430)" --device $dev --precision $prec \
  --batch 64 --workers 4 > "$work/gan.out" 2>&1 &
p2=$!
python3 -m studio pretrain evaluators --out "$work/evaluators" --seconds "$(s 240)" --device $dev --precision $prec \
  > "$work/evaluators.out" 2>&1 &
p3=$!
wait $p1; r1=$?; wait $p2; r2=$?; wait $p3; r3=$?
echo "base rc=$r1 gan rc=$r2 evaluators rc=$r3 wall=$(( $(date +%s) - start ))s" | tee -a "$out/logs.txt"
for f in base gan evaluators; do echo "== $f"; tail -c 4000 "$work/$f.out"; done >> "$out/logs.txt"
cp "$work/base_log.jsonl" "$out/base_log.jsonl" 2>/dev/null
tar -C "$work" -cf - studio-mini gan-mini evaluators 2>/dev/null | gzip -6 | split -b 15m - "$out/assets.tgz.part-"
ls -la "$out"
