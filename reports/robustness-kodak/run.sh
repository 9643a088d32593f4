#!/usr/bin/env bash
# The five real tiny autoencoders through `evalvae robustness` on the first 4 Kodak photos: tiled vs
# untiled decode (128 px tiles), bf16 vs fp32 (fp16 is not run on CPU), and 256 -> 512 -> 1024 px
# with the real LPIPS-alex network.
#
#   EVALVAE_TEST_ASSETS=../shared/assets EVALVAE_TEST_WEIGHTS=DIR bash reports/robustness-kodak/run.sh [OUT]
#
# DIR is what `python $EVALVAE_TEST_ASSETS/make-weights DIR` wrote. The run goes into OUT (default
# outputs/robustness-kodak); its tables, plots and report.md are copied next to this script.
set -euo pipefail
cd "$(dirname "$0")/../.."
A="${EVALVAE_TEST_ASSETS:?set EVALVAE_TEST_ASSETS}"
W="${EVALVAE_TEST_WEIGHTS:?set EVALVAE_TEST_WEIGHTS (make-weights)}"
OUT="${1:-outputs/robustness-kodak}"
export HF_HUB_OFFLINE=1

python -m evalvae robustness "+vae=[taesd,taesdxl,taesd3,taef1,taef2]" \
  "vae.taesd.source=$A/weights/taesd-family" "vae.taesdxl.source=$A/weights/taesd-family" \
  "vae.taesd3.source=$A/weights/taesd-family" "vae.taef1.source=$A/weights/taesd-family" \
  "vae.taef2.source=$A/weights/taef2" \
  "metrics.lpips.backbone_weights=$W/lpips/alexnet_features.pth" \
  dataset=folder "dataset.path=$A/images/kodak" dataset.limit=4 \
  progress=false "hydra.run.dir=$OUT"

dest=reports/robustness-kodak
rm -rf "$dest/report" "$dest"/*.csv "$dest"/*.png "$dest"/*.json
cp "$OUT"/{robustness.csv,timings.csv,vaes.json} "$OUT"/robustness-*.png "$dest/"
mkdir -p "$dest/report" && cp -r "$OUT/report/report.md" "$dest/report/"
