"""The published protocol presets (``protocol=NAME``, conf/protocol/): each against its table in docs/protocols.md,
value by value; a run records its preset and the report titles its section with it; ``evalvae protocols``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

import evalvae.conf
from evalvae.report import write_report
from evalvae.run import run
from tests import helpers

DOCS = Path(__file__).resolve().parents[2] / "docs" / "protocols.md"
PRESETS = sorted(p.stem for p in (Path(evalvae.conf.__file__).parent / "protocol").glob("*.yaml"))


def documented(name: str) -> dict:
    """The ``| `key` | value | ... |`` rows of the docs' section of preset ``name``, values read as YAML."""
    section = DOCS.read_text(encoding="utf-8").split(f"\n## {name}\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([a-z_.]+)` \| ([^|]+?) \|", section, flags=re.M)
    return {key: yaml.safe_load(value) for key, value in rows}


def test_every_preset_is_documented_and_lists_itself():
    assert PRESETS == ["imagenet-256", "omnidoc-256", "sd-vae-card"]
    out = helpers.evalvae_main(["protocols"])
    assert out.returncode == 0
    for name in PRESETS:
        assert re.search(rf"^{re.escape(name)} +\S", out.stdout, flags=re.M), out.stdout
        assert len(documented(name)) >= 6


@pytest.mark.parametrize("name", PRESETS)
def test_the_preset_sets_what_its_table_says(name):
    cfg = helpers.compose_run([f"protocol={name}", "dataset.path=/data"])
    for key, value in documented(name).items():
        assert OmegaConf.select(cfg, key) == value, f"{name}: {key}"
    assert cfg.protocol.name == name and cfg.protocol.source.startswith("https://")


def test_a_run_records_its_preset_and_the_report_titles_its_section(tmp_path, real_weights):
    images = helpers.write_images(tmp_path / "images")
    common = [
        f"dataset.path={images}",
        "dataset.resolution=32",
        "device=cpu",
        "workers=0",
        *helpers.standin("v"),
        f"cache_dir={tmp_path / 'cache'}",
        f"metrics.lpips.backbone_weights={real_weights / 'lpips' / 'vgg16_features.pth'}",
        "~metrics.fid",
    ]
    cfg = helpers.compose_run(["protocol=imagenet-256", *common, "~metrics.dinov2"])
    out = run(cfg, out_dir=tmp_path / "run").out_dir
    protocol = json.loads((out / "metrics.json").read_text())
    assert protocol["named_protocol"]["name"] == "imagenet-256" and protocol["metrics"]["lpips"]["net"] == "vgg"
    assert protocol["quantize"] is False
    md = (write_report([out], tmp_path / "rep", grids=False).parent / "report.md").read_text()
    assert re.search(r"^## imagenet-256 · images · 32×32", md, flags=re.M), md[:400]
    # the same settings without the preset: one section (settings decide), not titled with the preset's name
    plain = ["dataset=folder", "metrics=all", "metrics.quantize=false", "metrics.lpips.net=vgg", *common]
    same = run(helpers.compose_run(plain), out_dir=tmp_path / "plain").out_dir
    md = (write_report([out, same], tmp_path / "rep2", grids=False).parent / "report.md").read_text()
    sections = re.findall(r"^## images · .*", md, flags=re.M)
    assert sections == ["## images · 32×32"], sections
