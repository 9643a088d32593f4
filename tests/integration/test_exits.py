"""Exit statuses CI can trust, through the real command line (in this process: ``evalvae_main``).

0: everything asked for was measured; 3: the job ran and kept its results, but a VAE failed, a VAE
scored no image, or a metric is unavailable (``strict=false``: 0, and the console still says so);
2: a usage or configuration error; 130: Ctrl-C.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from tests.helpers import REPO, evalvae_main, run_args, standin

CLOSING = "evalvae: incomplete run (exit status 3): "


def lines(text: str, prefix: str = "evalvae:") -> list[str]:
    return [line for line in text.splitlines() if line.startswith(prefix)]


def test_a_complete_run_exits_0_and_its_command_line_s_config_is_checked_once(tmp_path, image_dir, monkeypatch):
    from evalvae.jobs import schema

    calls = []
    check_node = schema.check_node
    monkeypatch.setattr(schema, "check_node", lambda *a: calls.append(a[2]) or check_node(*a))
    r = evalvae_main(run_args(image_dir, tmp_path / "run", *standin("ok")))
    assert r.returncode == 0, r.stderr
    assert "incomplete" not in r.stderr and lines(r.stderr) == []
    assert calls == [""], "the schema checks the whole config once, at the entry"


INCOMPLETE = {
    # a VAE failed
    "failed": ([*standin("bad", fail_at=0)], ["VAE 'bad' failed"]),
    # a VAE scored no image: +vae=files with no matching file (exit 0, empty summary, before)
    "no image": (["+vae=files", "vae.files.path={empty}"], ["VAE 'files' scored no image"]),
    # a metric asked for is unavailable: a misspelt weights path (exit 0 before)
    "lpips unavailable": (
        ["metrics=lpips", "metrics.lpips.backbone_weights=/no/such/alexnet.pth"],
        ["lpips unavailable"],
    ),
    # metrics=all without its weights
    "all unavailable": (
        ["metrics=all", "metrics.lpips.backbone_weights=/no/such/alexnet.pth", "metrics.fid.weights=/no/such/fid.pth"],
        ["lpips unavailable", "rfid/kid unavailable"],
    ),
}


@pytest.mark.parametrize("case", list(INCOMPLETE))
def test_an_incomplete_run_exits_3_says_why_in_one_line_and_keeps_its_results(tmp_path, image_dir, case):
    extra, expected = INCOMPLETE[case]
    (tmp_path / "empty").mkdir()
    extra = [e.format(empty=tmp_path / "empty") for e in extra]
    out = tmp_path / "run"
    r = evalvae_main(run_args(image_dir, out, *standin("ok"), *extra))
    assert r.returncode == 3, r.stderr
    assert "Traceback" not in r.stderr
    closing = r.stderr.rstrip().splitlines()[-1]
    assert closing.startswith(CLOSING) and f"the results written are in {out}" in closing
    assert all(e in closing for e in expected), closing
    assert "strict=false accepts an incomplete run" in closing
    per = pd.read_csv(out / "per_image.csv")  # the VAE that worked is kept whole
    assert (per.vae == "ok").sum() == 6 and per.loc[per.vae == "ok", "psnr"].notna().all()
    assert set(pd.read_csv(out / "summary.csv").vae) == {"ok"}


def test_strict_false_accepts_an_incomplete_run_with_status_0_and_still_says_so(tmp_path, image_dir):
    args = run_args(image_dir, tmp_path / "run", *standin("ok"), *standin("bad", fail_at=0), "strict=false")
    r = evalvae_main(args)
    assert r.returncode == 0, r.stderr
    closing = r.stderr.rstrip().splitlines()[-1]
    assert closing.startswith("incomplete run, accepted by strict=false (exit status 0): VAE 'bad' failed")
    assert json.loads((tmp_path / "run" / "vaes.json").read_text())[1]["status"] == "failed"


def test_a_configuration_error_exits_2_in_one_line(tmp_path, image_dir):
    r = evalvae_main(run_args(image_dir, tmp_path / "run", *standin("ok"), "batch_size=0", "strict=maybe"))
    assert r.returncode == 2, r.stderr
    assert "invalid strict='maybe'; choose one of true, false" in r.stderr and "Traceback" not in r.stderr


def test_strict_is_in_every_app_config():
    from evalvae.config import compose

    for app in ("run", "bench", "ref", "latents", "robustness"):
        assert compose([], app).strict is True, app


# -- the other jobs -------------------------------------------------------------------------------
def test_bench_latents_and_robustness_exit_3_when_a_vae_fails(tmp_path, image_dir):
    missing = tmp_path / "no-such-weights"
    common = ["dataset=folder", f"dataset.path={image_dir}", "device=cpu", *standin("ok")]
    common += ["+vae=taesd", f"vae.taesd.source={missing}"]
    jobs = {
        "bench": [
            "bench.resolutions=[32]",
            "bench.batch_sizes=[1]",
            "bench.dtypes=[fp32]",
            "bench.modes=[plain]",
            "bench.warmup=0",
            "bench.repeats=1",
            "bench.min_repeats=1",
            "bench.isolate=none",
            "bench.fidelity=false",
            "bench.plots=false",
        ],
        "latents": ["dataset.resolution=32", "workers=0", "latents.noise=[0.05]", "latents.plots=false"],
        "robustness": [
            "dataset.resolution=32",
            "workers=0",
            "metrics=default",
            "robustness.checks=[precision]",
            "robustness.dtypes=[bf16]",
            "robustness.bf16_on_cpu=true",
            "robustness.plots=false",
            "report=false",
        ],
    }
    for job, extra in jobs.items():
        out = tmp_path / job
        r = evalvae_main([job, *common, *extra, f"hydra.run.dir={out}"])
        assert r.returncode == 3, (job, r.stderr[-3000:])
        closing = r.stderr.rstrip().splitlines()[-1]
        assert closing.startswith(f"{CLOSING}VAE 'taesd' failed"), (job, closing)
        record = {v["vae"]: v["status"] for v in json.loads((out / "vaes.json").read_text())} if job != "bench" else {}
        assert record in ({}, {"ok": "ok", "taesd": "failed"}), (job, record)
        assert "Traceback" not in r.stderr


def test_ref_exits_3_when_a_set_level_metric_is_unavailable(tmp_path, image_dir):
    args = [
        "ref",
        "dataset=folder",
        f"dataset.path={image_dir}",
        "dataset.resolution=32",
        "device=cpu",
        "workers=0",
        "metrics=all",
        "~metrics.lpips",
        "metrics.fid.extractor=tests.helpers.TinyExtractor",
        "+metrics.inception._target_=evalvae.metrics.distribution.FIDKID",
        "+metrics.inception.weights=/no/such/fid.pth",
        f"cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={tmp_path / 'ref'}",
    ]
    r = evalvae_main(args)
    assert r.returncode == 3, r.stderr[-3000:]
    closing = r.stderr.rstrip().splitlines()[-1]
    assert closing.startswith(
        f"{CLOSING}rfid/kid unavailable; the results written are in {tmp_path / 'cache' / 'refstats'}"
    )
    assert list((tmp_path / "cache" / "refstats").rglob("*")), "the available metric's statistics are cached"


# -- Ctrl-C ---------------------------------------------------------------------------------------
def test_ctrl_c_says_how_far_it_got_in_one_line_exits_130_and_the_same_command_continues(
    tmp_path, image_dir, monkeypatch
):
    """VAE 'b' is interrupted after 'a' finished (3 batches of 2) and 2 of its own: 5 of 6 batches."""
    out = tmp_path / "run"
    args = run_args(image_dir, out, "batch_size=2", *standin("a", stored=True), *standin("b", gain=0.9, stored=True))
    monkeypatch.setenv("EVALVAE_TEST_INTERRUPT_AT", "b:4")
    r = evalvae_main(args)
    assert r.returncode == 130, r.stderr
    assert "Traceback" not in r.stderr
    assert lines(r.stderr) == [
        f"evalvae: interrupted after 5 of 6 batches; run the same command again (or resume={out}) to continue"
    ]
    assert set(pd.read_csv(out / "per_image.csv").vae) == {"a"}  # the finished VAE's tables are written
    monkeypatch.delenv("EVALVAE_TEST_INTERRUPT_AT")
    again = evalvae_main([*args[:-1], f"hydra.run.dir={tmp_path / 'again'}"])
    assert again.returncode == 0, again.stderr
    assert "VAE 'b': 2 of 3 batch(es) already done" in again.stderr, again.stderr
    assert pd.read_csv(tmp_path / "again" / "per_image.csv").groupby("vae").size().to_dict() == {"a": 6, "b": 6}


@pytest.mark.slow
def test_a_real_sigint_mid_run_prints_one_line_and_exits_130(tmp_path, image_dir):
    """``python -m evalvae run`` sent SIGINT while its stand-in decodes (one image in two seconds, so that the
    signal lands mid-run even when a loaded machine wakes this test late): one line, status 130, and the same
    command then reads the finished batches instead of redoing them."""
    out = tmp_path / "run"
    cache = tmp_path / "cache"
    args = [
        *run_args(image_dir, out, "batch_size=1", *standin("slow", delay=2.0, stored=True))[1:-1],
        f"cache_dir={cache}",
    ]
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TQDM_DISABLE="1")
    cmd = [sys.executable, "-m", "evalvae", "run", *args]
    proc = subprocess.Popen(
        [*cmd, f"hydra.run.dir={out}"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # as in a terminal: a test suite started in the background (`.ci/run &`) inherits SIGINT ignored, and
        # a Python started so never raises KeyboardInterrupt
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    # the VAE's record (what vaes.json says of it, stored once it is loaded) and two finished batches
    while len(list((cache / "results").rglob("*.safetensors"))) < 3 and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.1)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr + stdout
    (line,) = lines(stderr)
    done = int(line.split("interrupted after ")[1].split(" of ")[0])
    assert 2 <= done < 6 and line.endswith(f"of 6 batches; run the same command again (or resume={out}) to continue")
    again = subprocess.run(
        [*cmd, f"hydra.run.dir={tmp_path / 'again'}"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr
    assert f"VAE 'slow': {done} of 6 batch(es) already done" in again.stderr


def test_a_sweep_runs_every_job_and_exits_3_if_one_was_incomplete(tmp_path, image_dir):
    """Each job of ``-m`` keeps its results; the status comes once every job has run."""
    args = run_args(image_dir, tmp_path / "unused", *standin("ok"), *standin("bad", fail_at=0), "batch_size=1,2")
    r = evalvae_main(["run", "-m", *args[1:-1], f"hydra.sweep.dir={tmp_path / 'sweep'}"])
    assert r.returncode == 3, r.stderr
    assert r.stderr.count(CLOSING) == 2  # one closing line per job
    for job in ("0", "1"):
        assert set(pd.read_csv(tmp_path / "sweep" / job / "per_image.csv").vae) == {"ok"}
