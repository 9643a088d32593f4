"""``run_t2i(cfg, out)``: generate latents once per (prompt, seed), decode them with every VAE, score the decodes.

Order of work: configuration and latent-space families are checked first; then the pipeline is
loaded (only if some latent is not stored yet), then the VAEs, whose channels and spatial factor
must match the pipeline's; then latents are generated and stored; then every VAE decodes the
same stored latents. A VAE that fails to load or part-way through its decodes is recorded failed
(``evalvae.jobs.failures.record_failure``) and the others go on; without the reference decoder no VAE has
agreement numbers (:meth:`T2IWriter.reference_failed`).

Generation batches are fixed by position, not by what is missing: the run's (prompt, seed) items,
in suite order with the seeds of each prompt together, are cut into chunks of
``pipeline.batch_size``, and a chunk with any latent missing is generated whole. Float kernels
depend on the batch they run in, so this is what makes a latent regenerated after a cache miss
byte-identical to the one generated with its chunk-mates; only the missing latents are written.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from importlib.resources import files
from pathlib import Path

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from evalvae.config import instantiate
from evalvae.device import peak_memory_mb, release_memory, reset_peak_memory, resolve_device, synchronize
from evalvae.errors import ConfigError, EvalvaeError
from evalvae.io import cache_dir
from evalvae.jobs import autobatch
from evalvae.jobs.failures import (
    log_failures,
    record_failure,
    unavailable_metrics,
)
from evalvae.jobs.runtime import RunOutcome, StageTimes, loader_workers, progress_bar, timing_row
from evalvae.jobs.task import Task
from evalvae.jobs.vaes import selected_vaes
from evalvae.metrics.base import SetStates
from evalvae.provenance import environment, software
from evalvae.results import RunWriter, join_notes, write_frame
from evalvae.t2i.decode import Item, VAEState, decode_and_score, items_of
from evalvae.t2i.latents import LatentStore
from evalvae.t2i.metrics import REFERENCE_NOTE, T2IMetrics, by_category, console_table
from evalvae.t2i.pipeline import DiffusersPipeline
from evalvae.vae import LatentSpace

log = logging.getLogger(__name__)

ID_COLUMNS = ["vae", "image", "prompt_id", "prompt", "category", "seed"]


class LatentSpaceMismatch(EvalvaeError):
    """A VAE cannot decode the pipeline's latents."""


def vaes_of_family(family: str) -> list[str]:
    """Names of the shipped VAE configs whose latent space is ``family``."""
    names = []
    for p in sorted(files("evalvae.conf").joinpath("vae").iterdir(), key=lambda p: p.name):
        if p.name.endswith(".yaml"):
            ((name, spec),) = OmegaConf.create(p.read_text()).items()
            if spec.get("latent_space") == family:
                names.append(name)
    return names


def mismatch(vae: str, vae_space, pipeline: str, space) -> LatentSpaceMismatch:
    hint = ", ".join(vaes_of_family(space.family if isinstance(space, LatentSpace) else space)) or "none shipped"
    return LatentSpaceMismatch(
        f"VAE '{vae}' (latent space {vae_space}) cannot decode the latents of pipeline '{pipeline}' "
        f"(latent space {space}); choose VAEs of that space: {hint}"
    )


def generation_chunks(items: list[Item], missing: list[Item], batch_size: int) -> list[list[Item]]:
    """The pipeline batches that produce ``missing``: every chunk of ``batch_size`` consecutive
    ``items`` holding a missing one, whole, so its batch composition never depends on the cache."""
    wanted = {it.image for it in missing}
    chunks = [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
    return [chunk for chunk in chunks if any(it.image in wanted for it in chunk)]


class T2IWriter(RunWriter):
    """The run's tables with prompt columns, the reference decoder noted, and a per-category summary."""

    def __init__(self, out: Path, metrics: list[str], reference: str, agreement: list[str]):
        super().__init__(out, metrics)
        self.columns = ID_COLUMNS + self.metrics + ["height", "width"]
        self.reference, self.agreement = reference, agreement

    def add_vae(self, info: dict) -> None:
        super().add_vae({**info, "reference": info.get("vae") == self.reference})

    def reference_failed(self) -> None:
        """Without the reference decoder no VAE has agreement numbers: not even for the batches decoded
        before it failed, since a mean over those would not be comparable with a complete run's."""
        note = f"reference decoder '{self.reference}' failed, so no VAE is compared with it"
        self.notes.update({m: join_notes(self.notes.get(m, ""), note) for m in self.agreement})
        for row in self.rows:
            row.update(dict.fromkeys(self.agreement, math.nan))

    def summary(self) -> pd.DataFrame:
        summary = super().summary()
        ref = (summary["vae"] == self.reference) & summary["metric"].isin(self.agreement)
        summary.loc[ref, "note"] = REFERENCE_NOTE
        return summary

    def flush(self) -> pd.DataFrame:
        summary = super().flush()
        write_frame(self.out / "summary_by_category.csv", by_category(self.per_image(), self.metrics))
        return summary


class T2IJob(Task):
    def __init__(self, cfg: DictConfig, out: Path):
        super().__init__(cfg, out)
        self.device = resolve_device(cfg.device)
        self.batch_size = cfg.t2i.batch_size
        self.specs = selected_vaes(cfg)
        self.suite = instantiate(cfg.suite, _convert_="all")
        self.pipeline: DiffusersPipeline = instantiate(cfg.pipeline, _convert_="all")
        for name, spec in self.specs.items():
            if spec.get("latent_space") not in (None, self.pipeline.family):
                raise mismatch(name, spec.latent_space, self.pipeline.name, self.pipeline.family)
        self.reference = cfg.t2i.reference_vae or next(iter(self.specs))
        if self.reference not in self.specs:
            raise ConfigError(
                "t2i.reference_vae",
                self.reference,
                list(self.specs),
                hint="the reference decoder must be one of the selected VAEs",
            )
        self.items: list[Item] = items_of(self.suite.prompts, self.pipeline.seeds)
        self.cache = cache_dir(cfg.cache_dir)
        self.metrics = T2IMetrics(cfg, self.cache, self.device)
        self.writer = T2IWriter(out, self.metrics.per_image_names, self.reference, self.metrics.agreement_names)
        self.writer.notes = self.metrics.notes()
        self.store: LatentStore | None = None
        self.todo: list[Item] | None = None  # latents to generate, once known
        self.load_s = 0.0  # pipeline load seconds (0 when every latent came from the cache)
        self.generation: dict = {}
        self.vaes: dict[str, VAEState] = {}
        self.failed: dict[str, str] = {}

    def protocol(self) -> dict:
        quant = "rounded to 8 bits" if self.metrics.quantize else "clamped to [0, 255], not rounded"
        return {
            "task": "t2i",
            "dataset": self.image_set(),
            "pipeline": self.pipeline.describe(),
            "suite": self.suite.describe(),
            "n_images": len(self.items),
            "reference_vae": self.reference,
            "latents": {
                **self.generation,
                "store": self.cfg.t2i.latents,
                "root": str(self.store.root) if self.store else None,
                "format": "safetensors, tensor 'latent' (C, h, w) float32 in diffusion space, as output_type='latent' returns it (FLUX unpacked)",
            },
            "images": "images/<vae>/<image>.png: the decode clamped to [-1, 1] and rounded to 8-bit RGB"
            if self.cfg.t2i.save_images
            else None,
            "pixels": f"decodes clamped to [0, 255] and {quant}",
            "quantize": self.metrics.quantize,
            "metrics": self.metrics.protocol(),
            "software": software(),
            "environment": environment(self.device),
        }

    def image_set(self) -> dict:
        """The generated images described as a dataset (for reports): runs with equal fields decoded equal latents."""
        p = self.pipeline
        size = {"resolution": p.height} if p.height == p.width else {"height": p.height, "width": p.width}
        return {
            "name": f"{self.suite.name} prompts · {p.name}",
            "root": self.suite.source,
            "n_files": len(self.items),
            **size,
            "latents": {"pipeline": p.source_identity(), **p.settings(), "seeds": p.seeds, "device": self.device.type},
            "suite_sha256": self.suite.sha256,
            **self.suite.filters,
            "reference_vae": self.reference,
            "original_label": f"reference decoder {self.reference}",
        }

    def write_prompts(self) -> None:
        rows = [
            {
                "image": it.image,
                "prompt_id": it.prompt.id,
                "prompt": it.prompt.text,
                "category": it.prompt.category,
                "seed": it.seed,
            }
            for it in self.items
        ]
        write_frame(
            self.out / "prompts.csv", pd.DataFrame(rows, columns=["image", "prompt_id", "prompt", "category", "seed"])
        )

    def _store(self) -> LatentStore:
        generation = {
            "pipeline": self.pipeline.source_identity(),
            **self.pipeline.settings(),
            "device": self.device.type,
        }
        return LatentStore(self.cfg.t2i.latents, self.out, self.cache, generation)

    def missing(self) -> list[Item]:
        return [it for it in self.items if self.store.stored_shape(it.image, it.prompt.text, it.seed) is None]

    def prepare(self) -> LatentSpace:
        """Load the pipeline if some latent must be generated; return the latents' space."""
        if self.cfg.t2i.latents == "cache" and self.pipeline.source_identity() is not None:
            self.store = self._store()
            self.todo = self.missing()
        if self.todo is None or self.todo:
            reset_peak_memory(self.device)
            start = time.perf_counter()
            self.pipeline.load(self.device)
            self.load_s = time.perf_counter() - start
            if self.store is None:
                self.store = self._store()
                self.todo = self.missing()
            return self.pipeline.latent_space()
        c, h, _ = self.store.stored_shape(self.items[0].image, self.items[0].prompt.text, self.items[0].seed)
        return LatentSpace(self.pipeline.family, int(c), self.pipeline.height // int(h))

    def load_vaes(self, space: LatentSpace) -> None:
        """Load every VAE (the reference first) with task=recon's policy (fp32 instead of fp16/bf16 as
        vae.<name>.upcast says); refuse any whose latent space differs from ``space``."""

        def one(name: str, spec) -> None:
            loaded = self.load(name, spec)
            fakes = SetStates(self.metrics.sets)
            self.vaes[name] = VAEState(loaded.vae, StageTimes(self.device), fakes, load_s=loaded.load_s)

        order = [self.reference, *(n for n in self.specs if n != self.reference)]
        for name, reason in self.each_vae({n: self.specs[n] for n in order}, one, self.writer, flush=False).items():
            self.fail(name, reason)
        for name, state in self.vaes.items():
            vs = state.vae.latent_space
            if (vs.family, vs.channels, vs.downsample) != (space.family, space.channels, space.downsample):
                raise mismatch(name, vs, self.pipeline.name, space)

    def fail(self, name: str, reason: str) -> None:
        self.failed[name] = reason
        if name == self.reference:
            log.error(
                "evalvae: the reference decoder '%s' failed, so no VAE gets %s; CLIP score and FID/KID are still computed",
                name,
                ", ".join(self.writer.agreement) or "agreement numbers",
            )
            self.writer.reference_failed()
        release_memory(self.device)

    def decode_failed(self, name: str, e: BaseException) -> None:
        """A VAE raised while decoding or scoring: drop it, its rows and its PNGs; the others go on."""
        state = self.vaes.pop(name)
        reason = record_failure(self.writer, name, e, state.vae)
        del state
        if self.cfg.t2i.save_images:
            shutil.rmtree(self.out / "images" / name, ignore_errors=True)
        self.fail(name, reason)

    def generate(self) -> None:
        """Run the pipeline on every chunk (:func:`generation_chunks`) with a latent not stored yet; store those latents."""
        todo, n_cached = self.todo or [], len(self.items) - len(self.todo or [])
        chunks = generation_chunks(self.items, todo, self.pipeline.batch_size)
        wanted = {it.image for it in todo}
        n_run = sum(map(len, chunks))
        gen_s = 0.0
        if todo:
            log.info(
                "generating %d latent(s) with %s (%d step(s)) in %d batch(es) of %d image(s); %d found in the cache",
                len(todo),
                self.pipeline.name,
                self.pipeline.steps,
                len(chunks),
                n_run,
                n_cached,
            )
            with progress_bar(self.cfg.progress, n_run, "generate") as bar:
                for chunk in chunks:
                    synchronize(self.device)
                    start = time.perf_counter()
                    latents = self.pipeline.generate([it.prompt.text for it in chunk], [it.seed for it in chunk])
                    gen_s += time.perf_counter() - start
                    for it, z in zip(chunk, latents):
                        if it.image in wanted:  # a stored chunk-mate is left as it is (a reader may hold it)
                            self.store.save(it.image, it.prompt.text, it.seed, z)
                    bar.update(len(chunk))
        elif self.items:
            log.info("all %d latent(s) found in the cache; the pipeline is not run", len(self.items))
        p = self.pipeline
        n = len(todo)
        self.generation = {"generated": n, "from_cache": n_cached, "pipeline_images": n_run}
        self.writer.write_json("metrics.json", self.protocol())
        row = {
            "pipeline": p.name,
            "device": str(self.device),
            "dtype": p.loaded.get("torch_dtype", p.dtype_name),
            "batch_size": p.batch_size,
            "n_images": len(self.items),
            "n_generated": n,
            "n_cached": n_cached,
            "n_pipeline_images": n_run,
            "load_s": self.load_s,
            "text_encode_s": p.text_encode_s,
            "denoise_s": gen_s - p.text_encode_s,
            "denoiser_calls": p.denoiser_calls,
            "generate_s": gen_s,
            "ms_per_image": 1000 * gen_s / n_run if n_run else float("nan"),
            "peak_mem_mb": peak_memory_mb(self.device) if n else float("nan"),
        }
        write_frame(self.out / "generation.csv", pd.DataFrame([row]))
        p.unload()
        release_memory(self.device)

    def batches(self):
        for i in range(0, len(self.items), self.batch_size):
            chunk = self.items[i : i + self.batch_size]
            yield chunk, torch.stack([self.store.read(it.image, it.prompt.text, it.seed) for it in chunk])

    def decode(self) -> None:
        if self.metrics.sets:
            batch = self.cfg.batch_size if self.cfg.batch_size != "auto" else autobatch.DEFAULT  # a loader's batches
            self.metrics.reference_statistics(batch, loader_workers(self.cfg.workers), self.device)
        image_dir = self.out / "images" if self.cfg.t2i.save_images else None
        with progress_bar(self.cfg.progress, len(self.items), "decode") as bar:

            def on_rows(rows):
                self.writer.add_rows(rows)
                bar.update(len(rows) // max(len(self.vaes), 1))

            decode_and_score(
                self.vaes, self.reference, self.batches(), self.metrics, image_dir, on_rows, self.decode_failed
            )

    def finish(self) -> RunOutcome:
        w = self.writer
        for name, st in self.vaes.items():
            w.add_set_rows(name, self.metrics.set_rows(st.fakes))
            stages = ("decode", "metrics", "save")
            work = sum(st.times.seconds.get(k, 0.0) for k in stages)
            decode_ms = 1000 * st.times.seconds.get("decode", 0.0) / max(st.n, 1)
            w.add_timing(
                timing_row(
                    name,
                    st.vae.dtype_name,
                    self.device,
                    self.batch_size,
                    st.n,
                    st.load_s,
                    st.times,
                    stages,
                    st.load_s + work,
                    peak_mem_mb=st.peak_mb,
                    decode_ms_per_image=decode_ms,
                )
            )
            w.add_vae({"status": "ok", **st.vae.describe()})
        order = list(self.specs)
        w.vaes.sort(key=lambda v: order.index(v["vae"]))  # failures were recorded as they happened
        summary = w.flush()
        log_failures(self.failed, len(self.specs))
        w.write_json("metrics.json", self.protocol())
        if not summary.empty:
            log.info("\n%s", console_table(summary))
            log.info("results in %s", self.out)
        m = self.metrics
        missing = unavailable_metrics([*m.pair, *m.unavailable_sets, *([m.clip] if m.clip is not None else [])])
        return RunOutcome(self.out, summary, self.failed, report=bool(self.cfg.get("report")), missing=missing)


def run_t2i(cfg: DictConfig, out: Path) -> RunOutcome:
    """Evaluate each VAE in ``cfg.vae`` as the decoder of ``cfg.pipeline`` on the prompts of ``cfg.suite``."""
    job = T2IJob(cfg, Path(out))
    OmegaConf.save(cfg, job.out / "config.yaml", resolve=True)
    job.write_prompts()
    job.writer.write_json("metrics.json", job.protocol())
    log.info(
        "suite %s: %d prompt(s) x %d seed(s) = %d image(s); pipeline %s (%s); VAEs %s (reference %s)",
        job.suite.name,
        len(job.suite),
        len(job.pipeline.seeds),
        len(job.items),
        job.pipeline.name,
        job.pipeline.source,
        ", ".join(job.specs),
        job.reference,
    )
    space = job.prepare()
    job.load_vaes(space)
    if job.vaes:
        job.generate()
        job.decode()
    else:
        log.error("evalvae: no VAE could be loaded; no latent is generated")
        job.pipeline.unload()
    return job.finish()


class T2ITask(Task):
    """``task=t2i``: the VAEs as decoders of one text-to-image pipeline's latents (:func:`run_t2i`)."""

    name = "t2i"

    def run(self) -> RunOutcome:
        return run_t2i(self.cfg, self.out)
