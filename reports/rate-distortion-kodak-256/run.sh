#!/usr/bin/env bash
# TAEF2 with 8-bit latents against JPEG and WebP at TAEF2's bits per pixel, and bicubic-f8, on
# Kodak-24 at 256 px with the real LPIPS-alex network; then the report with its rate-distortion plot.
#
#   EVALVAE_TEST_ASSETS=../shared/assets EVALVAE_TEST_WEIGHTS=DIR bash reports/rate-distortion-kodak-256/run.sh [OUT]
#
# DIR is what `python $EVALVAE_TEST_ASSETS/make-weights DIR` wrote. The run goes into OUT (default
# outputs/rate-distortion-kodak-256); its tables, plots and report.md are copied next to this script.
set -euo pipefail
cd "$(dirname "$0")/../.."
A="${EVALVAE_TEST_ASSETS:?set EVALVAE_TEST_ASSETS}"
W="${EVALVAE_TEST_WEIGHTS:?set EVALVAE_TEST_WEIGHTS (make-weights)}"
OUT="${1:-outputs/rate-distortion-kodak-256}"
export HF_HUB_OFFLINE=1

# TAEF2's latents: 32 channels at 1/8 of 256 px, 8 bits each plus 64 bits of min/max per channel:
# (32 x 32 x 32 x 8 + 32 x 64) / 256^2 = 4.03125 bpp
bpp=4.03125
python -m evalvae run "+vae=[taef2,jpeg,webp,bicubic-f8]" "vae.taef2.source=$A/weights/taef2" \
  metrics.latent_bits=8 "vae.jpeg.bpp=$bpp" "vae.webp.bpp=$bpp" \
  metrics=lpips "metrics.lpips.backbone_weights=$W/lpips/alexnet_features.pth" \
  dataset=folder "dataset.path=$A/images/kodak" dataset.resolution=256 \
  "cache_dir=$OUT/cache" report=false progress=false "hydra.run.dir=$OUT/run"
python -m evalvae report "$OUT/run" --out "$OUT/report" --worst 1

dest=reports/rate-distortion-kodak-256
rm -rf "$dest/run" "$dest/report"
mkdir -p "$dest/run" "$dest/report"
cp "$OUT/run"/{summary.csv,per_image.csv,timings.csv,metrics.json,vaes.json,config.yaml} "$dest/run/"
cp -r "$OUT/report"/{report.md,plots,tables} "$dest/report/"
