#!/usr/bin/env bash
# The five real tiny autoencoders, metrics=all with the real LPIPS-alex and FID Inception networks,
# on Kodak-24 (256 and 512 px) and COCO val2017 mini (120 images, 256 px); then one report.
#
#   EVALVAE_TEST_ASSETS=../shared/assets EVALVAE_TEST_WEIGHTS=DIR bash reports/tiny-vaes/run.sh [OUT]
#
# DIR is what `python $EVALVAE_TEST_ASSETS/make-weights DIR` wrote. Runs go into OUT (default
# outputs/tiny-vaes); the report, its tables and the run tables are copied next to this script.
set -euo pipefail
cd "$(dirname "$0")/../.."
A="${EVALVAE_TEST_ASSETS:?set EVALVAE_TEST_ASSETS}"
W="${EVALVAE_TEST_WEIGHTS:?set EVALVAE_TEST_WEIGHTS (make-weights)}"
OUT="${1:-outputs/tiny-vaes}"
export HF_HUB_OFFLINE=1

common=(
  "+vae=[taesd,taesdxl,taesd3,taef1,taef2]"
  "vae.taesd.source=$A/weights/taesd-family" "vae.taesdxl.source=$A/weights/taesd-family"
  "vae.taesd3.source=$A/weights/taesd-family" "vae.taef1.source=$A/weights/taesd-family"
  "vae.taef2.source=$A/weights/taef2"
  metrics=all "metrics.lpips.backbone_weights=$W/lpips/alexnet_features.pth"
  "metrics.fid.weights=$W/fid/pt_inception-2015-12-05_torch-fidelity.pth"
  "cache_dir=$OUT/cache" report=false progress=false
)
python -m evalvae run "${common[@]}" dataset=folder "dataset.path=$A/images/kodak" dataset.resolution=256 "hydra.run.dir=$OUT/kodak-256"
python -m evalvae run "${common[@]}" dataset=folder "dataset.path=$A/images/kodak" dataset.resolution=512 "hydra.run.dir=$OUT/kodak-512"
python -m evalvae run "${common[@]}" dataset=coco "dataset.path=$A/images/coco-val2017-mini" dataset.resolution=256 "hydra.run.dir=$OUT/coco-256"
python -m evalvae report "$OUT/kodak-256" "$OUT/kodak-512" "$OUT/coco-256" --out "$OUT/report" --worst 1

dest=reports/tiny-vaes
rm -rf "$dest/report" "$dest/runs"
cp -r "$OUT/report" "$dest/report"
for r in kodak-256 kodak-512 coco-256; do
  mkdir -p "$dest/runs/$r"
  cp "$OUT/$r"/{summary.csv,per_image.csv,timings.csv,metrics.json,vaes.json,config.yaml} "$dest/runs/$r/"
done
