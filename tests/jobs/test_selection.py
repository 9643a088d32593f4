"""Selecting VAEs: vae_dir for the tiny family, and named variants (a fine-tune beside its base) end to end."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from evalvae.errors import ConfigError
from evalvae.jobs.checking import UnknownName
from evalvae.run import run
from evalvae.vae.taesd import TinyAutoencoder
from tests.helpers import compose_run, evalvae_main, save_pth_pair

SMALL = ["dataset.limit=2", "dataset.resolution=64", "workers=0"]


def save_safetensors_pair(folder: Path, prefix: str, latent_channels: int = 4, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = TinyAutoencoder(latent_channels, False)
    folder.mkdir(parents=True, exist_ok=True)
    for part in ("encoder", "decoder"):
        state = getattr(model, part).state_dict()
        save_file({k: v.contiguous() for k, v in state.items()}, folder / f"{prefix}_{part}.safetensors")
    return folder


def vaes_json(out: Path) -> dict[str, dict]:
    return {v["vae"]: v for v in json.loads((out / "vaes.json").read_text())}


def resolve(cfg):
    from evalvae.jobs.selection import resolve

    return resolve(cfg)


# -- vae_dir ---------------------------------------------------------------------------------------
def test_vae_dir_points_the_tiny_vaes_with_files_there_and_keeps_the_others(tmp_path):
    folder = save_safetensors_pair(tmp_path / "w", "taesd")
    save_pth_pair(folder, "taef1", latent_channels=16, pool=False)
    cfg = compose_run(["+vae=[taesd,taesdxl,taef1,taef2,jpeg]", f"vae_dir={folder}"])
    selection = resolve(cfg)
    sources = {name: spec.get("source") for name, spec in selection.specs.items()}
    assert sources["taesd"] == sources["taef1"] == str(folder.resolve())
    assert sources["taesdxl"] == "madebyollin/taesdxl" and sources["taef2"] == "pkg://evalvae.vae/weights/taef2"
    assert sources["jpeg"] is None, "a codec has no weights: vae_dir leaves it alone"
    notes = "\n".join(selection.notes)
    assert (
        "holds no taesdxl_encoder / taesdxl_decoder (.safetensors or .pth): taesdxl keeps its default source, madebyollin/taesdxl"
        in notes
    )
    assert "taef2 keeps its default source, the weights shipped with evalvae" in notes
    assert cfg.vae.taesd.source == "madebyollin/taesd", "resolve works on a copy"


def test_an_explicit_source_wins_over_vae_dir(tmp_path):
    folder = save_safetensors_pair(tmp_path / "w", "taesd")
    other = save_safetensors_pair(tmp_path / "other", "taesd", seed=1)
    selection = resolve(compose_run(["+vae=taesd", f"vae.taesd.source={other}", f"vae_dir={folder}"]))
    assert selection.specs["taesd"].source == str(other)
    assert f"vae.taesd.source={other} is set, so vae_dir is not used for taesd" in selection.notes


@pytest.mark.parametrize("app", ["bench", "latents", "robustness"])
def test_the_other_apps_take_vae_dir(tmp_path, app):
    from evalvae.jobs.schema import validate

    folder = save_safetensors_pair(tmp_path / "w", "taesd")
    cfg = validate(compose_run(["+vae=taesd", f"vae_dir={folder}"], app), app)
    assert resolve(cfg).specs["taesd"].source == str(folder.resolve())
    with pytest.raises(ConfigError, match=r"invalid vae_dir="):
        validate(compose_run(["+vae=taesd", f"vae_dir={tmp_path / 'nope'}"], app), app)


def test_vae_dir_end_to_end_offline(tmp_path, caplog):
    """taesd's default is a hub id (offline here): with vae_dir it runs from the folder's pair."""
    folder = save_safetensors_pair(tmp_path / "w", "taesd")
    caplog.set_level(logging.INFO)
    outcome = run(compose_run(["+vae=[taesd,taef2]", f"vae_dir={folder}", *SMALL]), out_dir=tmp_path / "run")
    assert not outcome.failed and list(dict.fromkeys(outcome.summary.vae)) == ["taesd", "taef2"]
    vaes = vaes_json(tmp_path / "run")
    assert vaes["taesd"]["source"] == str(folder.resolve()) and vaes["taesd"]["source_kind"] == "safetensors-dir"
    assert "evalvae/vae/weights/taef2" in vaes["taef2"]["source"]
    said = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("taesd: taesd_encoder / taesd_decoder from vae_dir=") for m in said)
    assert any("taef2 keeps its default source" in m for m in said)
    assert f"source: {folder.resolve()}" in (tmp_path / "run" / "config.yaml").read_text(), "config.yaml records it"


def test_cli_vae_dir_runs_offline_and_a_missing_one_is_one_line(tmp_path):
    folder = save_safetensors_pair(tmp_path / "w", "taesd")
    # offline, taesd's default (a hub id) is refused before torch is imported: vae_dir is seen first
    ok = evalvae_main(
        ["run", "+vae=taesd", f"vae_dir={folder}", "dataset.limit=1", *SMALL[1:], "report=false"], cwd=tmp_path
    )
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "taesd: taesd_encoder / taesd_decoder from vae_dir=" in ok.stderr
    bad = evalvae_main(["run", "+vae=taesd", f"vae_dir={tmp_path / 'nope'}"], cwd=tmp_path)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    errors = [line for line in bad.stderr.splitlines() if line.strip()]
    assert errors == [
        f"evalvae: invalid vae_dir='{tmp_path / 'nope'}'; no such folder; give a folder holding "
        "<name>_encoder / <name>_decoder (.safetensors or .pth)"
    ]


@pytest.mark.slow
def test_vae_dir_with_the_shared_tiny_family(tmp_path, taesd_family_dir):
    names = ["taesd", "taesdxl", "taesd3", "taef1", "taef2"]
    outcome = run(
        compose_run([f"+vae=[{','.join(names)}]", f"vae_dir={taesd_family_dir}", "dataset.limit=1", *SMALL[1:]]),
        out_dir=tmp_path / "run",
    )
    assert not outcome.failed and list(dict.fromkeys(outcome.summary.vae)) == names
    vaes = vaes_json(tmp_path / "run")
    for name in names[:4]:
        assert vaes[name]["source"] == str(taesd_family_dir.resolve()) and vaes[name]["weights_dtype"] == "bf16"
    assert "evalvae/vae/weights/taef2" in vaes["taef2"]["source"]


# -- named variants --------------------------------------------------------------------------------
def test_a_variant_is_its_base_with_its_own_fields(tmp_path):
    cfg = compose_run(["+vae=taef2", f"+vae.taef2-ft={{base: taef2, source: {tmp_path}}}", "dtype=bf16"])
    specs = resolve(cfg).specs
    assert list(specs) == ["taef2", "taef2-ft"]
    ft = specs["taef2-ft"]
    assert ft._target_ == specs["taef2"]._target_ and ft.weights_prefix == "taef2" and ft.dtype == "bf16"
    assert ft.source == str(tmp_path) and ft.sha256 is None, "the base's pins describe the base's files"
    assert "base" not in ft
    same = resolve(compose_run(["+vae=taef2", "+vae.taef2-half.base=taef2", "+vae.taef2-half.dtype=fp16"])).specs
    assert same["taef2-half"].sha256 == specs["taef2"].sha256 and same["taef2-half"].dtype == "fp16"
    # the base as this job configured it, and a variant of a variant
    chain = [
        "+vae=jpeg",
        "vae.jpeg.quality=50",
        "+vae.j2={base: jpeg}",
        "+vae.j3={base: j2, options: {optimize: true}}",
    ]
    specs = resolve(compose_run(chain)).specs
    assert specs["j2"].quality == 50 and specs["j3"].quality == 50 and specs["j3"].options.optimize is True


def test_a_variant_needs_a_known_base_and_a_name_of_its_own(tmp_path):
    with pytest.raises(UnknownName, match=r"unknown VAE 'taef3' in vae\.x\.base=taef3; did you mean taef2"):
        resolve(compose_run(["+vae.x={base: taef3}"]))
    with pytest.raises(ConfigError, match=r"vae\.taef2\.base.*a name of its own"):
        resolve(compose_run(["+vae=taef2", "+vae.taef2.base=taesd"]))
    with pytest.raises(ConfigError, match=r"vae\.b\.base='a'; variants whose bases form a cycle \(a -> b -> a\)"):
        resolve(compose_run(["+vae.a={base: b}", "+vae.b={base: a}"]))
    r = evalvae_main(["run", "+vae.x={base: taef3}", f"hydra.run.dir={tmp_path}"], cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    (line,) = [line for line in r.stderr.splitlines() if line.strip()]
    assert line.startswith("evalvae: unknown VAE 'taef3' in vae.x.base=taef3; did you mean taef2, taef1?"), line


def test_a_fine_tune_beside_its_base_end_to_end(tmp_path, tiny_pth_dir):
    """Results, report and compare name the variant; its weights are its own."""
    ft = save_pth_pair(tmp_path / "ft", "taef2", latent_channels=32, pool=True, seed=3)  # stands in for a fine-tune
    cfg = compose_run(["+vae=taef2", f"+vae.taef2-ft={{base: taef2, source: {ft}}}", *SMALL], report=True)
    outcome = run(cfg, out_dir=tmp_path / "run")
    assert not outcome.failed and list(dict.fromkeys(outcome.summary.vae)) == ["taef2", "taef2-ft"]
    vaes = vaes_json(tmp_path / "run")
    assert vaes["taef2-ft"]["source"] == str(ft.resolve()) and vaes["taef2"]["source"] != vaes["taef2-ft"]["source"]
    per_image = pd.read_parquet(tmp_path / "run" / "per_image.parquet").pivot(
        index="image", columns="vae", values="psnr"
    )
    assert (per_image["taef2"] - per_image["taef2-ft"]).abs().min() > 1, "the variant decodes with its own weights"
    markdown = (tmp_path / "run" / "report" / "report.md").read_text()
    assert "taef2-ft" in markdown
    r = evalvae_main(["compare", str(tmp_path / "run"), str(tmp_path / "run")], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "taef2-ft" in r.stdout


def test_codec_variants_compare_settings_in_one_run(tmp_path):
    cfg = compose_run(["+vae=jpeg", "+vae.jpeg-q95={base: jpeg, quality: 95}", *SMALL])
    outcome = run(cfg, out_dir=tmp_path / "run")
    summary = outcome.summary.set_index(["vae", "metric"])["mean"]
    assert (
        summary["jpeg-q95", "psnr"] > summary["jpeg", "psnr"] + 2
        and summary["jpeg-q95", "bpp"] > summary["jpeg", "bpp"]
    )
