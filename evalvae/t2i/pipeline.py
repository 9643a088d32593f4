"""Diffusers text-to-image pipelines run to diffusion-space latents (``output_type="latent"``).

The pipeline's own VAE is not loaded: decoding is the job of the VAEs under test. Latents are
returned as the VAE adapters' ``decode`` takes them: SD/SDXL latents scaled by the VAE's scaling
factor (what the pipelines return), FLUX latents unpacked from 2x2 patches with the pipeline
class's own ``_unpack_latents`` (still scaled and shifted).
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import logging
import time
import warnings
from pathlib import Path

import torch

from evalvae.checkpoints import local_then_hub
from evalvae.device import parse_dtype, synchronize
from evalvae.errors import ConfigError, WeightsUnavailable, check_positive_int, error_reason
from evalvae.hub import source_kind
from evalvae.vae.base import LatentSpace

log = logging.getLogger(__name__)

SKIP_COMPONENTS = ("vae", "safety_checker", "feature_extractor", "image_encoder")
TEXT_ENCODERS = ("text_encoder", "text_encoder_2", "text_encoder_3")


def parse_seeds(seeds) -> list[int]:
    """An integer N means seeds 0..N-1; a list gives the seeds themselves."""
    if isinstance(seeds, int) and not isinstance(seeds, bool) and seeds >= 1:
        return list(range(seeds))
    if isinstance(seeds, (list, tuple)) or (hasattr(seeds, "__iter__") and not isinstance(seeds, str)):
        values = list(seeds)
        valid = all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in values)
        if values and valid and len(set(values)) == len(values):
            return values
    raise ConfigError(
        "pipeline.seeds", seeds, hint="a count N (seeds 0..N-1) or a list of distinct non-negative integers"
    )


def folder_fingerprint(root: Path) -> str:
    """sha256 over a local pipeline folder: the content of its configs and the name, size and
    modification time of its weight files (hashing gigabytes of weights per run would cost minutes)."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if not p.is_file() or any(part.startswith(".") for part in rel.parts):
            continue
        h.update(rel.as_posix().encode() + b"\0")
        if p.suffix in (".json", ".txt"):
            h.update(hashlib.sha256(p.read_bytes()).digest())
        else:
            st = p.stat()
            h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


@contextlib.contextmanager
def _quiet_loading():
    """No per-component loading bars from diffusers and transformers (evalvae logs what it loads)."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    enabled = [(lib, lib.is_progress_bar_enabled()) for lib in (dlog, tlog)]
    for lib, _ in enabled:
        lib.disable_progress_bar()
    try:
        yield
    finally:
        for lib, was in enabled:
            if was:
                lib.enable_progress_bar()


class DiffusersPipeline:
    """A text-to-image pipeline from a hub id or a local diffusers folder, and how to run it.

    ``latent_space`` is the family its latents belong to (sd, sdxl, sd3, flux); channels and the
    spatial factor are read from the loaded model. ``packed`` marks FLUX-style packed latents.
    ``seeds`` is per prompt. ``dtype=auto`` is fp16 on CUDA and fp32 elsewhere.
    """

    def __init__(
        self,
        name: str,
        source: str,
        latent_space: str,
        steps: int = 30,
        guidance: float = 7.5,
        height: int = 512,
        width: int = 512,
        seeds=1,
        batch_size: int = 1,
        dtype: str = "auto",
        scheduler: str | None = None,
        revision: str | None = None,
        packed: bool = False,
        extra: dict | None = None,
    ):
        self.name, self.source, self.revision, self.family = name, str(source), revision, latent_space
        self.kind = source_kind(self.source, "pipeline.source")
        if self.kind not in ("hub", "dir"):
            hint = "a hub id or a local diffusers pipeline folder (with model_index.json)"
            raise ConfigError("pipeline.source", source, hint=hint)
        if self.kind == "dir" and not (Path(self.source).expanduser() / "model_index.json").is_file():
            hint = "this folder has no model_index.json; save the pipeline with save_pretrained"
            raise ConfigError("pipeline.source", source, hint=hint)
        self.steps = check_positive_int("pipeline.steps", steps)
        if isinstance(guidance, bool) or not isinstance(guidance, (int, float)):
            raise ConfigError("pipeline.guidance", guidance, hint="a number (classifier-free guidance scale)")
        self.guidance, self.packed = float(guidance), bool(packed)
        multiple = 16 if self.packed else 8
        for arg, v in (("pipeline.height", height), ("pipeline.width", width)):
            if check_positive_int(arg, v) % multiple:
                grid = "the latent grid of 2x2 patches" if self.packed else "the latent grid"
                raise ConfigError(arg, v, hint=f"a multiple of {multiple} ({grid})")
        self.height, self.width = height, width
        self.seeds = parse_seeds(seeds)
        self.batch_size = check_positive_int("pipeline.batch_size", batch_size)
        self.dtype_name = dtype
        if dtype != "auto":
            parse_dtype(dtype, "pipeline.dtype")
        self.scheduler = scheduler
        if scheduler is not None:
            import diffusers

            cls = getattr(diffusers, str(scheduler), None)
            if not (inspect.isclass(cls) and issubclass(cls, diffusers.SchedulerMixin)):
                hint = "a diffusers scheduler class name, e.g. EulerDiscreteScheduler, or null for the pipeline's own"
                raise ConfigError("pipeline.scheduler", scheduler, hint=hint)
        self.extra = dict(extra or {})
        self.pipe, self._identity = None, None
        self.loaded: dict = {}  # facts known once the pipeline is loaded
        self.device = torch.device("cpu")
        self.text_encode_s, self.denoiser_calls = 0.0, 0

    # -- identity (what determines the latents besides prompt and seed) -------------------------
    def source_identity(self) -> str | None:
        """The hub id at its cached commit, or a local folder's fingerprint; None if not known yet."""
        if self._identity is None:
            if self.kind == "dir":
                self._identity = "dir:" + folder_fingerprint(Path(self.source).expanduser())
            else:
                from huggingface_hub import try_to_load_from_cache

                found = try_to_load_from_cache(self.source, "model_index.json", revision=self.revision)
                self._identity = f"hub:{self.source}@{Path(found).parent.name}" if isinstance(found, str) else None
        return self._identity

    def settings(self) -> dict:
        out = {"steps": self.steps, "guidance": self.guidance, "height": self.height, "width": self.width}
        return out | {"scheduler": self.scheduler, "dtype": self.dtype_name, "packed": self.packed, "extra": self.extra}

    # -- loading ------------------------------------------------------------------------------
    def load(self, device: torch.device) -> None:
        """Load the pipeline (without its VAE) onto ``device``; one actionable line if it cannot be had."""
        import diffusers

        self.device = torch.device(device)
        if self.dtype_name == "auto":
            dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        else:
            dtype = parse_dtype(self.dtype_name, "pipeline.dtype")
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*")
                # works in every supported diffusers; newer ones warn
                warnings.filterwarnings("ignore", message=".*torch_dtype.*deprecated.*")
                pipe = local_then_hub(
                    lambda local: self._from_pretrained(diffusers, dtype, local_files_only=local),
                    may_download=self.kind == "hub",
                )
        except Exception as e:  # hub, network and format errors all end in the same actionable line
            raise WeightsUnavailable(self._unavailable(e)) from None
        if self.scheduler is not None:
            compatible = sorted({c.__name__ for c in pipe.scheduler.compatibles} | {type(pipe.scheduler).__name__})
            if self.scheduler not in compatible:
                raise ConfigError("pipeline.scheduler", self.scheduler, compatible)
            pipe.scheduler = getattr(diffusers, self.scheduler).from_config(pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe.to(self.device)
        space = self.latent_space()
        classes = {"pipeline_class": type(pipe).__name__, "scheduler_class": type(pipe.scheduler).__name__}
        self.loaded = classes | {"torch_dtype": str(dtype).replace("torch.", "")}
        self.loaded |= {"latent_channels": space.channels, "latent_downsample": space.downsample}
        self._instrument()

    def _from_pretrained(self, diffusers, dtype, local_files_only: bool):
        config = diffusers.DiffusionPipeline.load_config(
            self.source, revision=self.revision, local_files_only=local_files_only
        )
        cls = getattr(diffusers, config["_class_name"])
        params = inspect.signature(cls.__init__).parameters
        off = {k: None for k in SKIP_COMPONENTS if k in params}
        if "requires_safety_checker" in params:
            off["requires_safety_checker"] = False
        with _quiet_loading():
            where = dict(revision=self.revision, local_files_only=local_files_only)
            return cls.from_pretrained(self.source, torch_dtype=dtype, use_safetensors=True, **where, **off)

    def _unavailable(self, e: Exception) -> str:
        reason = error_reason(e)
        if self.kind == "hub":
            return (
                f"pipeline '{self.name}': weights for hub id '{self.source}' are unavailable: not in the local Hugging Face "
                f"cache and the hub is unreachable, offline or gated ({type(e).__name__}: {reason}); download them where the hub is reachable "
                f"(huggingface-cli download {self.source}) or set pipeline.source=/path/to/pipeline-folder"
            )
        return f"pipeline '{self.name}': could not load '{self.source}' ({type(e).__name__}: {reason}); only safetensors weights are loaded"

    @property
    def denoiser(self) -> torch.nn.Module:
        unet = getattr(self.pipe, "unet", None)
        return unet if unet is not None else self.pipe.transformer

    def _instrument(self) -> None:
        """Time the text encoders and count denoiser calls with forward hooks (the device is synchronised)."""
        start = {}

        def enc_pre(module, args):
            synchronize(self.device)
            start[id(module)] = time.perf_counter()

        def enc_post(module, args, output):
            synchronize(self.device)
            self.text_encode_s += time.perf_counter() - start.pop(id(module))

        def count(module, args):
            self.denoiser_calls += 1

        for attr in TEXT_ENCODERS:
            if (enc := getattr(self.pipe, attr, None)) is not None:
                enc.register_forward_pre_hook(enc_pre)
                enc.register_forward_hook(enc_post)
        self.denoiser.register_forward_pre_hook(count)

    def latent_space(self) -> LatentSpace:
        """The loaded pipeline's latent space: declared family, channels of the (unpacked) latents, spatial factor."""
        channels = self.denoiser.config.in_channels // (4 if self.packed else 1)
        return LatentSpace(self.family, channels, self.pipe.vae_scale_factor)

    # -- generation ---------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(self, prompts: list[str], seeds: list[int]) -> torch.Tensor:
        """Latents ``(N, C, H/f, W/f)`` float32 on the CPU, one per (prompt, seed).

        Each image's initial noise comes from a CPU generator seeded with its seed, so a latent
        depends neither on the batch it was generated in nor on the device's random generator.
        """
        generators = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
        size = dict(height=self.height, width=self.width)
        steps = dict(num_inference_steps=self.steps, guidance_scale=self.guidance)
        out = self.pipe(prompt=list(prompts), **steps, **size, generator=generators, output_type="latent", **self.extra)
        latents = out.images
        if self.packed:
            latents = type(self.pipe)._unpack_latents(latents, self.height, self.width, self.pipe.vae_scale_factor)
        space = self.latent_space()
        expected = (len(prompts), space.channels, self.height // space.downsample, self.width // space.downsample)
        if tuple(latents.shape) != expected:
            raise WeightsUnavailable(
                f"pipeline '{self.name}' returned latents of shape {tuple(latents.shape)}, expected {expected}; "
                "check pipeline.packed for this pipeline class"
            )
        return latents.float().cpu()

    def unload(self) -> None:
        self.pipe = None

    def describe(self) -> dict:
        info = {"name": self.name, "source": self.source, "revision": self.revision, "identity": self.source_identity()}
        info |= {"latent_space": self.family, **self.settings(), "seeds": self.seeds, "batch_size": self.batch_size}
        info |= {"noise": "per image, torch.Generator('cpu').manual_seed(seed)", "output_type": "latent"}
        return {**info, **self.loaded}
