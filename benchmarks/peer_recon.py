"""A reconstruction job scripted without evalvae: diffusers, torchmetrics, lpips and clean-fid.

What a careful user would write to score VAEs on a folder of PNGs: for each VAE, encode (posterior
mode, as evalvae's kl-f8, ft-ema and ft-mse configs), decode, round to 8 bits, score PSNR and SSIM
(torchmetrics, per image, 11x11 Gaussian window, sigma 1.5) and LPIPS (the lpips package, inputs
in [-1, 1]), save the reconstructions as PNGs, then rFID of each folder of reconstructions against
the originals with clean-fid (``mode="clean"``). It takes the easy wins such a user would: images
decoded by DataLoader workers, PNGs written by 4 threads at compression level 1, one clean-fid
call per VAE (which re-reads the originals each time, as ``compute_fid`` does).

    python benchmarks/peer_recon.py --images DIR --vae NAME=DIR [--vae NAME=DIR ...] \
        --lpips-backbone FILE --inception FILE --work DIR --out RESULT.json \
        [--device cuda] [--precision fp32|bf16|tf32] [--batch-size 32] [--workers 4]

``--lpips-backbone`` (torchvision AlexNet ``features.*`` tensors) and ``--inception`` (torch-fidelity's
Inception state dict) replace the downloads these packages would make, so that nothing is fetched
and evalvae and this script score with the same networks. Writes ``RESULT.json``: the mean of each
metric per VAE, and the seconds of each stage.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image


class Pngs(torch.utils.data.Dataset):
    def __init__(self, files: list[Path]):
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(np.asarray(Image.open(self.files[i]).convert("RGB")).copy()).permute(2, 0, 1)


def lpips_alex(backbone: Path, device: torch.device) -> torch.nn.Module:
    """lpips.LPIPS(net='alex') with the package's linear heads and the AlexNet trunk read from ``backbone``."""
    import lpips

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(pretrained|weight enum).*")
        model = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
    features = torch.load(backbone, map_location="cpu", weights_only=True)
    # the trunk's slices keep torchvision's layer numbers: slice2.3.weight is features.3.weight
    trunk = {key: features["features." + key.split(".", 1)[1]] for key in model.net.state_dict()}
    model.net.load_state_dict(trunk)
    return model.eval().to(device)


def inception_pool3(weights: Path, device: torch.device):
    """clean-fid's ``custom_feat_extractor``: torch-fidelity's Inception up to its 2048-d pool3 features,
    fed clean-fid's resized float images in [0, 255] as (x - 128) / 128."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(weights))
    blocks = [m for name, m in net.to(device).named_children() if name != "fc"]

    def features(x: torch.Tensor) -> torch.Tensor:
        x = (x.to(device) - 128) / 128
        for block in blocks:
            x = block(x)
        return x.flatten(1)

    return features


def save_png(pixels: np.ndarray, path: Path) -> None:
    Image.fromarray(pixels).save(path, compress_level=1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=Path, required=True, help="a folder of same-size PNGs")
    p.add_argument("--vae", action="append", required=True, metavar="NAME=DIR", help="a diffusers AutoencoderKL folder")
    p.add_argument("--lpips-backbone", type=Path, required=True)
    p.add_argument("--inception", type=Path, required=True)
    p.add_argument("--work", type=Path, required=True, help="where the reconstructions go")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", choices=["fp32", "bf16", "tf32"], default="fp32")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=4)
    args = p.parse_args()

    import torchmetrics.functional.image as tm
    from cleanfid import fid
    from diffusers import AutoencoderKL

    start = time.perf_counter()
    device = torch.device(args.device)
    # fp32 and bf16 run IEEE float32 where float32 remains (as evalvae's precision=fp32 does); tf32 allows TF32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = args.precision == "tf32"
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    seconds = defaultdict(float)

    @contextmanager
    def stage(name: str):
        t = time.perf_counter()
        yield
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds[name] += time.perf_counter() - t

    files = sorted(args.images.glob("*.png"))
    loader = torch.utils.data.DataLoader(
        Pngs(files), batch_size=args.batch_size, num_workers=args.workers, pin_memory=device.type == "cuda"
    )
    with stage("load"):
        lpips_model = lpips_alex(args.lpips_backbone, device)
        features = inception_pool3(args.inception, device)
    metrics: dict[str, dict[str, float]] = {}
    with ThreadPoolExecutor(4) as saver, torch.inference_mode():
        for name, folder in (v.split("=", 1) for v in args.vae):
            with stage("load"):
                vae = AutoencoderKL.from_pretrained(folder, torch_dtype=dtype).to(device).eval()
            out = args.work / name
            out.mkdir(parents=True, exist_ok=True)
            values, saving, done = defaultdict(list), [], 0
            for images in loader:
                with stage("encode_decode"):
                    images = images.to(device, non_blocking=True)
                    x = (images.float() / 127.5 - 1).to(dtype)
                    y = vae.decode(vae.encode(x).latent_dist.mode()).sample
                    recon = ((y.float() + 1) / 2).clamp(0, 1).mul(255).round()
                with stage("metrics"):
                    original = images.float()
                    values["psnr"].append(
                        tm.peak_signal_noise_ratio(recon, original, data_range=255.0, reduction="none", dim=(1, 2, 3))
                    )
                    values["ssim"].append(
                        tm.structural_similarity_index_measure(recon, original, data_range=255.0, reduction="none")
                    )
                    values["lpips"].append(lpips_model(recon / 127.5 - 1, original / 127.5 - 1).flatten())
                with stage("save"):
                    pixels = recon.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
                    for j, a in enumerate(pixels):
                        saving.append(saver.submit(save_png, a, out / files[done + j].name))
                    done += len(pixels)
            with stage("save"):
                for f in saving:
                    f.result()
            metrics[name] = {k: float(torch.cat(v).double().mean()) for k, v in values.items()}
            del vae
    with stage("fid"):
        for name in metrics:
            metrics[name]["rfid"] = float(
                fid.compute_fid(
                    str(args.images),
                    str(args.work / name),
                    mode="clean",
                    custom_feat_extractor=features,
                    device=device,
                    batch_size=64,
                    num_workers=args.workers,
                    verbose=False,
                )
            )
    result = {
        "metrics": metrics,
        "seconds": {**seconds, "total": time.perf_counter() - start},
        "n_images": len(files),
        "batch_size": args.batch_size,
        "workers": args.workers,
        "precision": args.precision,
        "device": str(device),
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
