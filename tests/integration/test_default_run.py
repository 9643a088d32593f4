"""The embedded default: TAEF2's weights inside the package, and `evalvae run` with nothing selected."""

from __future__ import annotations

import hashlib
import json
from importlib.resources import files
from pathlib import Path

import pandas as pd
import pytest

from evalvae.errors import WeightsUnavailable
from evalvae.jobs.vaes import NoVAESelected, available_vaes
from evalvae.run import run
from evalvae.vae import load_vae
from tests.helpers import compose_run, evalvae_main

# upstream's files (github.com/madebyollin/taesd), as listed in the test assets' README
UPSTREAM_SHA256 = {
    "taef2_encoder.pth": "10a4e1021e89d7551eaf161352da8dbd0b1aa83872ae28b150c1df1ce2f147b6",
    "taef2_decoder.pth": "0a44a31e1ae59eb9dbf9359d24942fd3ef5928162c1800d97a28c61d51be0ab5",
}
SMALL = ["dataset.limit=2", "dataset.resolution=64", "workers=0"]  # two built-in photos at 64 px: seconds
DEFAULT = ["taef2", "jpeg", "bicubic-f8"]


def shipped_folder() -> Path:
    return Path(str(files("evalvae.vae"))) / "weights" / "taef2"


def test_the_package_holds_upstream_taef2_and_its_license():
    folder = shipped_folder()
    for name, sha in UPSTREAM_SHA256.items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == sha, name
    license_text = (folder / "LICENSE").read_text()
    assert license_text.startswith("MIT License") and "Ollin Boer Bohan" in license_text


def test_taef2_without_a_source_reads_the_shipped_weights():
    about = load_vae("taef2", compose_run(["+vae=taef2"]).vae.taef2, device="cpu").describe()
    assert Path(about["source"]) == shipped_folder().resolve() and about["weight_files"] == UPSTREAM_SHA256
    assert about["weights_dtype"] == "fp16" and about["latent_channels"] == 32


def test_the_shipped_weights_are_checked_against_the_pins():
    spec = compose_run(["+vae=taef2", "vae.taef2.sha256.encoder=" + "0" * 64]).vae.taef2
    with pytest.raises(WeightsUnavailable, match="has sha256 10a4e102.*expected 0{64}"):
        load_vae("taef2", spec, device="cpu")


def test_cli_with_nothing_selected_evaluates_the_default_selection_says_so_and_equals_the_assets_taef2(
    tmp_path, taef2_dir
):
    # the report of the default run: test_cli_run_alone_in_an_empty_folder_gives_real_taef2_numbers_and_a_report (slow)
    r = evalvae_main(["run", *SMALL, "report=false", f"cache_dir={tmp_path / 'c1'}"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    (out,) = (tmp_path / "outputs" / "run").iterdir()
    assert list(dict.fromkeys(pd.read_csv(out / "summary.csv").vae)) == DEFAULT
    assert "no VAE selected: evaluated the default selection taef2, jpeg, bicubic-f8 on 2 image(s)" in r.stderr
    assert "+vae=NAME" in r.stderr and "python -m evalvae vaes" in r.stderr and "Traceback" not in r.stderr
    vaes = {v["vae"]: v for v in json.loads((out / "vaes.json").read_text())}
    assert Path(vaes["taef2"]["source"]) == shipped_folder().resolve()
    per_image = pd.read_parquet(out / "per_image.parquet")
    assert len(per_image) == 2 * len(DEFAULT) and per_image.psnr.between(10, 60).all()
    config = (out / "config.yaml").read_text()
    assert "taef2:" in config and "jpeg:" in config, "config.yaml records what ran"
    assets = run(
        compose_run([*SMALL, "+vae=taef2", f"vae.taef2.source={taef2_dir}", f"cache_dir={tmp_path / 'c2'}"]),
        out_dir=tmp_path / "assets",
    )
    assert not assets.failed
    ours = per_image.query("vae == 'taef2'").reset_index(drop=True)
    theirs = pd.read_parquet(tmp_path / "assets" / "per_image.parquet").reset_index(drop=True)
    # the same bytes, the same batches, the same code: equal to float64 rounding (measured difference 0)
    pd.testing.assert_frame_equal(
        ours[["image", "psnr", "ssim"]], theirs[["image", "psnr", "ssim"]], rtol=0, atol=1e-12
    )


def test_a_rerun_of_the_shipped_taef2_reads_its_results_without_loading_it(tmp_path, monkeypatch):
    cfg = compose_run([*SMALL, "+vae=taef2", f"cache_dir={tmp_path / 'cache'}"])
    run(cfg, out_dir=tmp_path / "r1")
    monkeypatch.setattr("evalvae.jobs.task.load", lambda *a, **k: pytest.fail("taef2 was loaded again"))
    run(cfg, out_dir=tmp_path / "r2")
    first, second = (pd.read_parquet(tmp_path / r / "per_image.parquet") for r in ("r1", "r2"))
    pd.testing.assert_frame_equal(first, second)


def test_an_unknown_name_in_the_default_selection_is_one_line(tmp_path):
    r = evalvae_main(["run", "task.default_vaes=[taef3]", f"hydra.run.dir={tmp_path}"], cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    (line,) = [line for line in r.stderr.splitlines() if line.strip()]
    assert line.startswith("evalvae: unknown VAE 'taef3' in task.default_vaes=['taef3']; did you mean taef2"), line


def test_no_default_selection_still_names_the_choices(tmp_path):
    with pytest.raises(NoVAESelected, match=r"\+vae=NAME.*python -m evalvae vaes.*Available: .*ft-mse.*taef2"):
        run(compose_run(["task.default_vaes=null"]), out_dir=tmp_path)


def test_vaes_lists_every_name_with_its_default_weights(tmp_path):
    r = evalvae_main(["vaes"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line for line in r.stdout.splitlines()[3:] if line.strip()}
    assert set(rows) == set(available_vaes())
    assert "shipped with evalvae" in rows["taef2"] and "stabilityai/sd-vae-ft-mse" in rows["ft-mse"]
    assert "+vae=NAME" in r.stdout and "taef2, jpeg, bicubic-f8" in r.stdout
    assert evalvae_main(["vaes", "extra"], cwd=tmp_path).returncode == 2


@pytest.mark.slow
def test_cli_run_alone_in_an_empty_folder_gives_real_taef2_numbers_and_a_report(tmp_path, taef2_dir):
    """`python -m evalvae run`, nothing else, offline: the nine built-in photos at 256 px."""
    r = evalvae_main(["run"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    (out,) = (tmp_path / "outputs" / "run").iterdir()
    assert (out / "report" / "report.html").is_file() and (out / "report" / "report.md").is_file()
    reference = run(
        compose_run(["+vae=taef2", f"vae.taef2.source={taef2_dir}", f"cache_dir={tmp_path / 'ref-cache'}"]),
        out_dir=tmp_path / "reference",
    )
    assert not reference.failed
    ours = pd.read_parquet(out / "per_image.parquet").query("vae == 'taef2'").reset_index(drop=True)
    theirs = pd.read_parquet(tmp_path / "reference" / "per_image.parquet").reset_index(drop=True)
    assert len(ours) == 9
    pd.testing.assert_frame_equal(
        ours[["image", "psnr", "ssim"]], theirs[["image", "psnr", "ssim"]], rtol=0, atol=1e-12
    )
