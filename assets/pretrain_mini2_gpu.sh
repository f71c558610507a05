#!/usr/bin/env bash
# studio-mini 2's recipe from scratch on one GPU, for when one is lent: the autoencoder on the styled
# world, then the UNet on the campaign's data mix (style family, the product's caption forms, birds by
# subclass, noise offset), then the style-words round trip, `studio eval base` and the style words
# read back. The base comes back packed under OUTDIR (mini2.tgz.part-*: cat them | tar xz).
# Extra arguments go to `studio pretrain base`, e.g. a finer latent than the committed 16x16x8:
#   assets/pretrain_mini2_gpu.sh OUT 1 --set 'vae_channels=[16,32]' --set 'unet_channels=[32,32,64,128]' \
#     --set 'unet_attention=[false,true,true,false]'   (32x32x8 latent; the UNet's attention stays at 16 and 8)
# Usage: assets/pretrain_mini2_gpu.sh OUTDIR [SCALE] [pretrain options...]
#   SCALE multiplies the time budgets and the data (1: about 9 minutes on an H100; 0.02: a smoke on a CPU).
set -u
out=${1:?usage: assets/pretrain_mini2_gpu.sh OUTDIR [SCALE] [pretrain options...]}
scale=${2:-1}
shift; [ $# -gt 0 ] && shift
work=runs/gpu-mini2
rm -rf "$work"; mkdir -p "$work" "$out"
. assets/gpu_env.sh
s() { python3 -c "print(max(1, int($1 * $scale)))"; }
dev=cuda; prec=bf16; workers=12
python3 -c "import torch; torch.cuda.is_available() or exit(1)" || { dev=cpu; prec=fp32; workers=1; }
python3 -c "import torch; print('device:', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')" | tee "$out/logs.txt"
start=$(date +%s)
python3 -m studio pretrain base --out "$work/mini2" --vae-seconds "$(s 120)" --unet-seconds "$(s 330)" \
  --n-images "$(s 200000)" --device $dev --precision $prec --vae-batch 128 --unet-batch 512 --unet-lr 1e-3 \
  --workers $workers --set family_share=0.5 --set product_captions=true --set bird_share=0.25 \
  --set noise_offset=0.1 --log "$work/log.jsonl" "$@" > "$work/pretrain.out" 2>&1
echo "pretrain rc=$? wall=$(( $(date +%s) - start ))s" | tee -a "$out/logs.txt"
python3 bench/style_family.py round-trip --base "$work/mini2" --n "$(s 600)" --device $dev --json "$out/roundtrip.json" >> "$out/logs.txt" 2>&1
echo "round trip rc=$?" | tee -a "$out/logs.txt"
python3 -m studio eval base --base "$work/mini2" --n "$(s 200)" --seed 0 --device $dev --json "$out/eval-seed0.json" >> "$out/logs.txt" 2>&1
echo "eval rc=$?" | tee -a "$out/logs.txt"
python3 bench/style_family.py read-back --base "$work/mini2" --n "$(s 200)" --device $dev --json "$out/readback.json" >> "$out/logs.txt" 2>&1
echo "read-back rc=$? wall=$(( $(date +%s) - start ))s" | tee -a "$out/logs.txt"
tail -c 3000 "$work/pretrain.out" >> "$out/logs.txt"
cp "$work/log.jsonl" "$out/" 2>/dev/null
tar -C "$work" -cf - mini2 | gzip -6 | split -b 15m - "$out/mini2.tgz.part-"
ls -la "$out"
