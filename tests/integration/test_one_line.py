"""One line, no traceback, for every failure a user can cause; nothing already written is lost.

Through the real command line in this process (``evalvae_main``): folders that cannot be made,
misspelt keys inside ``dataset``, ``metrics`` and ``vae.<name>``, a tiny VAE's folder without its
weights, a sweep's ``++vae.X`` overrides, a VAE's failure said once, a resolution that is not a
multiple of the VAE's factor, and ``report``'s console lines.
"""

from __future__ import annotations

import logging

import pandas as pd
import pytest

from evalvae.errors import ConfigError
from evalvae.jobs.overrides import check_overrides
from tests.helpers import compose_run, evalvae_main, run_args, save_pth_pair, standin


def one_error(r) -> str:
    """The only line on stderr, which must start with ``evalvae:``."""
    assert "Traceback" not in r.stderr + r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("evalvae: "), r.stderr
    return lines[0]


@pytest.fixture()
def blocker(tmp_path):
    """A regular file: no folder can be made below it (root ignores chmod, not this)."""
    path = tmp_path / "file.txt"
    path.write_text("not a folder\n")
    return path


# -- folders that cannot be made ------------------------------------------------------------------
def test_a_run_directory_that_cannot_be_made_is_one_line(tmp_path, image_dir, blocker):
    r = evalvae_main(run_args(image_dir, blocker / "sub", *standin("ok")))
    assert r.returncode == 2
    line = one_error(r)
    assert f"hydra.run.dir='{blocker / 'sub'}'" in line and f"{blocker} is a file, not a folder" in line
    sweep = evalvae_main(
        ["run", "-m", *run_args(image_dir, blocker, *standin("ok"))[1:-1], f"hydra.sweep.dir={blocker}"]
    )
    assert sweep.returncode == 2 and f"hydra.sweep.dir='{blocker}'" in one_error(sweep)


def test_a_cache_that_cannot_be_made_is_one_line(tmp_path, image_dir, blocker, monkeypatch):
    r = evalvae_main(run_args(image_dir, tmp_path / "run", *standin("ok"), f"cache_dir={blocker / 'cache'}"))
    assert r.returncode == 2
    line = one_error(r)
    assert f"invalid cache_dir='{blocker / 'cache'}'; cannot write a folder there: {blocker} is a file" in line
    monkeypatch.setenv("EVALVAE_CACHE", str(blocker / "env-cache"))
    r = evalvae_main(run_args(image_dir, tmp_path / "run2", *standin("ok")))
    assert r.returncode == 2 and "invalid $EVALVAE_CACHE=" in one_error(r)


def test_a_report_folder_that_cannot_be_made_is_one_line_and_the_results_stay(tmp_path, image_dir, blocker):
    out = tmp_path / "run"
    assert evalvae_main(run_args(image_dir, out, *standin("ok"))).returncode == 0
    before = {p: p.read_bytes() for p in out.iterdir() if p.is_file()}
    r = evalvae_main(["report", out, "--out", blocker / "report"])
    assert r.returncode == 2
    assert f"invalid --out='{blocker / 'report'}'" in one_error(r)
    assert {p: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_the_end_of_run_report_failing_keeps_the_results_and_exits_3(tmp_path, image_dir):
    out = tmp_path / "run"
    out.mkdir()
    (out / "report").write_text("a file where the report folder goes\n")
    r = evalvae_main([a for a in run_args(image_dir, out, *standin("ok")) if a != "report=false"])
    assert r.returncode == 3, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("evalvae:")]
    assert len(errors) == 2 and errors[0].startswith(f"evalvae: no report for {out}")
    assert errors[1].startswith("evalvae: incomplete run (exit status 3): the report was not written")
    assert len(pd.read_csv(out / "per_image.csv")) == 6 and "Traceback" not in r.stderr


def test_compare_junit_in_a_folder_that_cannot_be_made_is_one_line(tmp_path, image_dir, blocker):
    out = tmp_path / "run"
    assert evalvae_main(run_args(image_dir, out, *standin("ok"))).returncode == 0
    r = evalvae_main(["compare", out, out, "--junit", blocker / "junit.xml"])
    assert r.returncode == 2 and f"invalid --junit='{blocker}'" in one_error(r)


# -- misspelt keys inside dataset, metrics and vae entries ---------------------------------------
@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["+vae=taesd", "+vae.taesd.sorce=/w"], "unknown key 'vae.taesd.sorce' in +vae.taesd.sorce=/w; did you mean "),
        (["+vae=taesd", "vae.taesd.sorce=/w"], "unknown key 'vae.taesd.sorce' in vae.taesd.sorce=/w; did you mean "),
        (
            ["dataset=folder", "dataset.pth=/d"],
            "unknown key 'dataset.pth' in dataset.pth=/d; did you mean dataset.path?",
        ),
        (["dataset=folder", "+dataset.pth=/d"], "unknown key 'dataset.pth' in +dataset.pth=/d; did you mean"),
        (["+dataset.anything=1"], "unknown key 'dataset.anything' in +dataset.anything=1 (dataset ("),
        (
            ["metrics=all", "metrics.fid.weight=/w"],
            "unknown key 'metrics.fid.weight' in metrics.fid.weight=/w; did you",
        ),
        (["metrics.quantise=false"], "unknown key 'metrics.quantise' in metrics.quantise=false; did you mean"),
        (["metrics.lpips.net=vgg"], "unknown key 'metrics.lpips' in metrics.lpips.net=vgg (metrics=default reads:"),
        (["+vae=taesd", "vae.taesdd.source=/w"], "unknown VAE 'taesdd' in vae.taesdd.source=/w; did you mean taesd"),
        (
            ["+vae=taesd", "++vae.taef2.source=/w"],
            "VAE 'taef2' of ++vae.taef2.source=/w is not selected: add +vae=taef2",
        ),
        (
            ["+vae=taesd", "vae.taesd.scaling_factor=1"],
            "vae.taesd.scaling_factor is not in the config yet: add it with +vae.taesd.scaling_factor=1",
        ),
        (["+vae=taesd", "+vae.taesd.source=/w"], "vae.taesd.source is in the config already: set it without '+'"),
    ],
)
def test_a_misspelt_or_unread_nested_key_is_refused_before_hydra_with_the_right_advice(overrides, expected):
    with pytest.raises(ConfigError) as e:
        check_overrides(overrides, "run")
    assert str(e.value).startswith(expected), str(e.value)
    assert "\n" not in str(e.value)


def test_the_suggestions_name_what_would_be_read():
    with pytest.raises(ConfigError) as e:
        check_overrides(["+vae=taesd", "+vae.taesd.sorce=/w"], "run")
    assert e.value.suggestions == ["vae.taesd.source"]
    assert "(vae.taesd (evalvae.vae.tiny.TinyAdapter) reads: config, dtype, force_upcast, latent_space," in str(e.value)
    with pytest.raises(ConfigError) as e:
        check_overrides(["metrics.lpips.net=vgg"], "run")
    assert str(e.value).endswith("lpips is in metrics=all, metrics=lpips")


def test_keys_that_are_read_pass_the_check():
    check_overrides(
        [
            "+vae=[taesd,taef2,jpeg]",
            "vae.taesd.source=/w",
            "+vae.taesd.scaling_factor=1",  # TinyAdapter takes it, the YAML does not list it
            "vae.taef2.sha256=null",
            "+vae.jpeg.options.subsampling=0",  # a key below a mapping of the YAML
            "dataset=folder",
            "dataset.path=/d",
            "metrics=all",
            "metrics.lpips.net=vgg",
            "++metrics.fid.seed=1",
            "~metrics.lpips",
            "+vae.mine._target_=tests.run_standins.Identity",  # a VAE defined on the command line
            "+vae.mine.gain=0.5",
            "+metrics.mae._target_=mypkg.MAE",  # and a metric
            "+metrics.mae.scale=2",
        ],
        "run",
    )
    check_overrides(["+vae=taesd,taef2", "++vae.taef2.source=/w"], "run")  # a sweep: selected in one of its jobs
    check_overrides(["+vae=files", "vae.files.path=/x"], "bench")


def test_cli_refuses_a_misspelt_nested_key_in_one_line_before_any_folder_is_made(tmp_path, image_dir):
    """Hydra said: Key 'sorce' is not in struct ... use +vae.taesd.sorce; followed, that was ignored."""
    for typo in ("vae.taesd.sorce", "+vae.taesd.sorce"):
        r = evalvae_main(run_args(image_dir, tmp_path / "out", "+vae=taesd", f"{typo}={tmp_path}"))
        assert r.returncode == 2
        assert "did you mean vae.taesd.source?" in one_error(r)
        assert not (tmp_path / "out").exists()


# -- a tiny VAE's folder without its weights -------------------------------------------------------
def test_a_tiny_vae_folder_without_its_pair_names_the_taesd_layout_and_is_said_once(tmp_path, image_dir):
    save_pth_pair(tmp_path / "weights", prefix="tiny", latent_channels=4, pool=False)
    r = evalvae_main(run_args(image_dir, tmp_path / "run", "+vae=taesd", f"vae.taesd.source={tmp_path / 'weights'}"))
    assert r.returncode == 3 and "Traceback" not in r.stderr
    failure = (
        f"evalvae: VAE 'taesd': {tmp_path / 'weights'} holds no TAESD-layout weights (looked for "
        "taesd_encoder{.safetensors,.pth} and taesd_decoder{.safetensors,.pth}, as github.com/madebyollin/taesd "
        "ships them) and no diffusers AutoencoderTiny (config.json); it holds tiny_encoder: "
        "set vae.taesd.weights_prefix=tiny"
    )
    assert failure in r.stderr.splitlines()
    assert "config.json found in directory" not in r.stderr  # diffusers' own message
    # said once: the closing line names the VAE, not its reason again; and there are no "others"
    assert r.stderr.count("holds no TAESD-layout weights") == 1
    assert "others" not in r.stderr and "VAE(s) failed" not in r.stderr
    assert r.stderr.rstrip().splitlines()[-1].startswith("evalvae: incomplete run (exit status 3): VAE 'taesd' failed")


def test_several_failures_are_summed_up_once_without_their_reasons_again(tmp_path, image_dir):
    vaes = [*standin("ok"), *standin("b1", fail_at=0), *standin("b2", fail_at=0)]
    r = evalvae_main(run_args(image_dir, tmp_path / "run", *vaes))
    assert r.returncode == 3
    assert r.stderr.count("stand-in decoder failure") == 2  # each failure's reason, once
    assert "2 of 3 VAE(s) failed (b1, b2, reasons above); the other VAE's results are complete" in r.stderr


# -- a sweep's ++vae.X overrides ------------------------------------------------------------------
def test_outside_a_sweep_the_note_suggests_no_vae_it_names(caplog):
    from evalvae.jobs.vaes import selected_vaes

    with caplog.at_level(logging.INFO):
        selected_vaes(compose_run(["+vae=taesd", "++vae.taef2.source=/w"]))
    assert "vae.taef2: not selected in this job (no +vae=taef2); its overrides are ignored" in caplog.text
    assert "did you mean" not in caplog.text


# -- a resolution that is not a multiple of the VAE's factor --------------------------------------
def test_a_resolution_cropped_to_the_factor_is_warned_once_and_titled_with_the_size_scored(tmp_path, image_dir):
    out = tmp_path / "run"
    args = [a for a in run_args(image_dir, out, *standin("a"), *standin("b", gain=0.9)) if a != "report=false"]
    r = evalvae_main([a.replace("dataset.resolution=32", "dataset.resolution=36") for a in args])
    assert r.returncode == 0, r.stderr
    warned = [line for line in r.stderr.splitlines() if "dataset.resolution=36" in line]
    assert warned == [
        "dataset.resolution=36 is not a multiple of VAE 'a''s downsampling factor 8: its images are scored at 32×32 "
        "(the 36×36 crop, centre-cropped to a multiple of 8); dataset.resolution=32 scores them whole"
    ]
    per = pd.read_csv(out / "per_image.csv")
    assert set(per.height) == set(per.width) == {32}
    md = (out / "report" / "report.md").read_text()
    assert "images · 32×32" in md and "images · 36×36" not in md
    assert "36×36, scored at 32×32" in (out / "report" / "report.html").read_text()


def test_a_resolution_that_is_a_multiple_is_not_warned_of(tmp_path, image_dir):
    r = evalvae_main(run_args(image_dir, tmp_path / "run", *standin("a")))
    assert r.returncode == 0 and "is not a multiple" not in r.stderr


# -- report's console lines -----------------------------------------------------------------------
def test_report_prints_plain_lines_as_run_does(tmp_path, image_dir):
    out = tmp_path / "run"
    assert evalvae_main(run_args(image_dir, out, *standin("ok"))).returncode == 0
    r = evalvae_main(["report", out, "--out", tmp_path / "report", "--no-grids"])
    assert r.returncode == 0, r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines and any(line.startswith("report in ") for line in lines)
    assert not any(line.startswith("[") or "[INFO]" in line for line in lines), lines


def test_a_read_only_folder_is_named_without_writing_to_it(tmp_path, monkeypatch):
    """As root, chmod does not stop writes, so the operating system's answers are stood in for: access(2)
    saying no (a read-only folder), then a write failing as on a read-only file system."""
    import errno
    import os
    import tempfile

    from evalvae.io import check_creatable, writable_dir

    readonly = tmp_path / "readonly"
    readonly.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(readonly) else real_access(p, mode))
    with pytest.raises(ConfigError, match=f"invalid --out='{readonly / 'report'}'; cannot write a folder there: "):
        check_creatable(readonly / "report", "--out")
    with pytest.raises(ConfigError, match=f"{readonly} is not writable"):
        writable_dir(readonly, "cache_dir")
    monkeypatch.setattr(os, "access", real_access)

    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    with pytest.raises(ConfigError, match="cannot write a folder there: Read-only file system"):
        writable_dir(tmp_path / "cache", "cache_dir")
