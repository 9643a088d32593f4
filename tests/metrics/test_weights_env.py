"""$EVALVAE_WEIGHTS: one folder for the LPIPS backbones and the FID Inception, so metrics=all works once it is set."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
import torchvision

from evalvae.metrics.features import InceptionV3
from evalvae.metrics.lpips import LPIPS
from evalvae.metrics.weights import MetricUnavailable
from evalvae.run import run
from tests.helpers import compose_run, evalvae_main

SMALL = ["+vae=jpeg", "dataset.limit=2", "dataset.resolution=64", "workers=0"]


def alexnet_file(path, seed: int):
    torch.manual_seed(seed)
    backbone = torchvision.models.alexnet()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v for k, v in backbone.state_dict().items() if k.startswith("features.")}, path)
    return backbone


@pytest.fixture()
def no_hub_cache(tmp_path, monkeypatch):
    """torch's hub cache holds a backbone of its own: the variable's folder must be the one read."""
    hub = tmp_path / "torch-hub"
    alexnet_file(hub / "checkpoints" / "alexnet-owt-7be5be79.pth", seed=9)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))


def test_lpips_reads_its_backbone_from_the_folder_and_an_explicit_path_wins(tmp_path, monkeypatch, no_hub_cache):
    folder = tmp_path / "weights"
    backbone = alexnet_file(folder / "lpips" / "alexnet_features.pth", seed=1)
    monkeypatch.setenv("EVALVAE_WEIGHTS", str(folder))
    metric = LPIPS()
    torch.testing.assert_close(metric.model.net.slice1[0].weight, backbone.features[0].weight, rtol=0, atol=0)
    assert metric.protocol()["provenance"]["weights"]["file"] == str(folder / "lpips" / "alexnet_features.pth")
    mine = alexnet_file(tmp_path / "mine.pth", seed=2)
    metric = LPIPS(backbone_weights=str(tmp_path / "mine.pth"))
    torch.testing.assert_close(metric.model.net.slice1[0].weight, mine.features[0].weight, rtol=0, atol=0)


def test_a_file_missing_from_the_folder_makes_the_metric_unavailable(tmp_path, monkeypatch, no_hub_cache):
    monkeypatch.setenv("EVALVAE_WEIGHTS", str(tmp_path / "empty"))
    expected = tmp_path / "empty" / "lpips" / "vgg16_features.pth"
    with pytest.raises(MetricUnavailable, match=rf"EVALVAE_WEIGHTS={tmp_path / 'empty'} but {expected} does not exist"):
        LPIPS(net="vgg")
    with pytest.raises(MetricUnavailable, match=r"fid/pt_inception-2015-12-05_torch-fidelity\.pth does not exist"):
        InceptionV3()


def test_the_real_networks_from_the_folder_are_recognised_as_standard(monkeypatch, real_weights):
    monkeypatch.setenv("EVALVAE_WEIGHTS", str(real_weights))
    assert LPIPS().weights.standard and LPIPS(net="vgg").weights.standard
    inception = InceptionV3()
    assert inception.weights.standard
    assert inception.weights.path == str(real_weights / "fid" / "pt_inception-2015-12-05_torch-fidelity.pth")


@pytest.mark.slow
def test_metrics_all_runs_with_only_the_variable_set(tmp_path, monkeypatch, real_weights):
    monkeypatch.setenv("EVALVAE_WEIGHTS", str(real_weights))
    outcome = run(compose_run([*SMALL, "metrics=all"]), out_dir=tmp_path / "run")
    summary = outcome.summary.set_index("metric")
    for metric in ("lpips", "rfid", "kid"):
        assert pd.notna(summary.loc[metric, "mean"]), (metric, summary.loc[metric, "note"])
    assert not summary["note"].fillna("").str.contains("non-standard").any()
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert str(real_weights) in json.dumps(metrics), "the protocol's provenance names the files read"


def test_cli_without_the_file_scores_the_rest_and_names_the_variable(tmp_path):
    out = tmp_path / "run"
    env = {"EVALVAE_WEIGHTS": str(tmp_path / "empty"), "TORCH_HOME": str(tmp_path / "torch")}
    r = evalvae_main(["run", *SMALL, "metrics=lpips", "report=false", f"hydra.run.dir={out}"], cwd=tmp_path, env=env)
    summary = pd.read_csv(out / "summary.csv").set_index("metric")
    assert summary.loc["psnr", "mean"] > 20 and pd.isna(summary.loc["lpips", "mean"]), r.stderr[-2000:]
    expected = tmp_path / "empty" / "lpips" / "alexnet_features.pth"
    assert f"EVALVAE_WEIGHTS={tmp_path / 'empty'} but {expected} does not exist" in summary.loc["lpips", "note"]
