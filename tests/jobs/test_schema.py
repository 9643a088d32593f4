"""Typed config: every shipped config validates against its schema; wrong values, misspelt keys and
misspelt group options are refused with the key, the value and the choices ("did you mean")."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import fields
from importlib.resources import files

import pytest
from omegaconf import OmegaConf

from evalvae.config import compose
from evalvae.errors import ConfigError
from evalvae.jobs import schema
from evalvae.jobs.checking import InvalidConfig, UnknownName, choices
from evalvae.jobs.overrides import check_overrides
from evalvae.jobs.schema import validate
from tests.helpers import REPO, evalvae_main


def options(group: str) -> list[str]:
    return sorted(
        p.name[: -len(".yaml")] for p in files("evalvae.conf").joinpath(group).iterdir() if p.name.endswith(".yaml")
    )


def missing_keys(node, prefix: str) -> list[str]:
    """The ``???`` values directly under ``node``."""
    return [f"{prefix}.{k}" for k in node if OmegaConf.is_missing(node, k)]


def filled(app: str, overrides: list[str], section: str, depth: int = 1) -> list[str]:
    """``overrides`` plus a value for each ``???`` of ``section`` (``depth`` 2: of each entry below it),
    after checking that validation names them."""
    node = OmegaConf.select(compose(overrides, app), section)
    nodes = {section: node} if depth == 1 else {f"{section}.{k}": node[k] for k in node}
    keys = [key for prefix, n in nodes.items() for key in missing_keys(n, prefix)]
    if keys:
        with pytest.raises(ConfigError) as e:
            validate(compose(overrides, app), app)
        named = [p.argument for p in getattr(e.value, "problems", [e.value])]
        assert named == keys and "a value is required" in str(e.value)
    return [*overrides, *(f"{k}=x" for k in keys)]


# -- every shipped config -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "app, overrides",
    [("run", []), ("run", ["task=recon"]), ("run", ["task=t2i"]), ("bench", []), ("ref", [])],
    ids=["run", "recon", "t2i", "bench", "ref"],
)
def test_each_app_composes_and_validates(app, overrides):
    cfg = compose(overrides, app)
    assert validate(cfg, app) is cfg


@pytest.mark.parametrize("app", ["run", "bench"])
def test_each_vae_config_validates(app):
    """Every ``conf/vae`` file selected at once: a problem is named by its ``vae.<name>.`` key."""
    vaes = options("vae")
    overrides = filled(app, [f"+vae=[{','.join(vaes)}]"], "vae", depth=2)
    cfg = validate(compose(overrides, app), app)
    assert list(cfg.vae) == vaes


@pytest.mark.parametrize("dataset", options("dataset"))
def test_each_dataset_config_validates(dataset):
    for app in ("run", "bench", "ref"):
        validate(compose(filled(app, [f"dataset={dataset}"], "dataset"), app), app)
    t2i = filled("run", ["task=t2i", "metrics=all", f"dataset@t2i.reference={dataset}"], "t2i.reference")
    validate(compose(t2i), "run")


@pytest.mark.parametrize("metrics", options("metrics"))
def test_each_metrics_config_validates(metrics):
    validate(compose([f"metrics={metrics}"]), "run")
    validate(compose([f"metrics={metrics}"], "ref"), "ref")


@pytest.mark.parametrize("group", ["pipeline", "suite"])
def test_each_t2i_pipeline_and_suite_validates(group):
    for option in options(group):
        validate(compose(filled("run", ["task=t2i", f"{group}={option}"], group)), "run")


def test_the_schemas_name_every_key():
    for app, schema_class in schema.SCHEMAS.items():
        keys = set(compose([], app))  # every key of the shipped config is typed
        assert {f.name for f in fields(schema_class)} >= keys, app


def test_the_schema_s_choices_equal_the_domain_s():
    # the domain modules check their arguments against these (evalvae.vocab spells them once)
    from evalvae.data.transforms import CROPS, SMALL
    from evalvae.device import DEVICES, DTYPES
    from evalvae.vae.base import MEMORY_MODES
    from evalvae.vocab import BENCH_OPS, ISOLATION, T2I_LATENTS

    assert choices(schema.DType) == list(DTYPES) and schema.DEVICES == DEVICES
    assert choices(schema.Crop) == list(CROPS) and choices(schema.Small) == list(SMALL)
    assert choices(schema.Mode) == list(MEMORY_MODES) and choices(schema.Latents) == list(T2I_LATENTS)
    assert choices(schema.Op) == list(BENCH_OPS) and choices(schema.Isolate) == list(ISOLATION)
    assert choices(schema.TaskName)[:2] == options("task")  # recon, t2i; then bench, ref


@pytest.mark.slow  # a fresh interpreter
def test_checking_a_command_line_imports_no_torch():
    code = (
        "import sys; from evalvae.jobs.overrides import check_overrides; check_overrides(['+vae=taesd'], 'run');"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


# -- wrong values -------------------------------------------------------------------------------
BAD = [
    ("run", ["batch_size=0"], "batch_size", 0, "a positive integer"),
    ("run", ["batch_size=2.5"], "batch_size", 2.5, "a positive integer"),
    ("run", ["dtype=fp8"], "dtype", "fp8", "choose one of fp32, fp16, bf16"),
    ("run", ["workers=-1"], "workers", -1, "or auto"),
    ("run", ["workers=many"], "workers", "many", "or auto"),
    ("run", ["progress=maybe"], "progress", "maybe", "choose one of auto, true, false"),
    ("run", ["channels_last=yes"], "channels_last", "yes", "choose one of true, false"),
    ("run", ["report=1"], "report", 1, "choose one of true, false"),
    ("run", ["device=gpu"], "device", "gpu", "choose one of auto, cpu, cuda, cuda:N, mps"),
    ("run", ["device=cuda:x"], "device", "cuda:x", "cuda:N"),
    ("run", ["seed=abc"], "seed", "abc", "an integer"),
    ("run", ["cache_dir=5"], "cache_dir", 5, "quote it as cache_dir='5'"),
    ("run", ["task.name=train"], "task.name", "train", "choose one of recon, t2i, bench, ref"),
    ("run", ["++resume=3"], "resume", 3, "a string"),
    ("run", ["++cache.latents=maybe"], "cache.latents", "maybe", "choose one of true, false"),
    ("run", ["++cache.results=0"], "cache.results", 0, "choose one of true, false"),
    ("run", ["+vae=taesd", "vae.taesd.dtype=fp64"], "vae.taesd.dtype", "fp64", "choose one of fp32, fp16, bf16"),
    ("run", ["metrics.quantize=sometimes"], "metrics.quantize", "sometimes", "choose one of true, false"),
    ("run", ["dataset.crop=side"], "dataset.crop", "side", "choose one of center, none"),
    ("run", ["dataset.small=shrink"], "dataset.small", "shrink", "choose one of upscale, skip"),
    ("run", ["dataset.resolution=4"], "dataset.resolution", 4, "at least 8 pixels"),
    ("run", ["dataset.resolution=null"], "dataset.resolution", None, "with crop=center"),
    ("run", ["dataset.limit=0"], "dataset.limit", 0, "a positive integer, or null"),
    ("run", ["task=t2i", "t2i.latents=disk"], "t2i.latents", "disk", "choose one of run, cache"),
    ("run", ["task=t2i", "t2i.batch_size=0"], "t2i.batch_size", 0, "a positive integer"),
    ("run", ["task=t2i", "dataset@t2i.reference=builtin", "t2i.reference.crop=x"], "t2i.reference.crop", "x", "center"),
    ("run", ["task=t2i", "pipeline._target_=null"], "pipeline._target_", None, "a dotted class or function path"),
    ("bench", ["bench.isolate=thread"], "bench.isolate", "thread", "choose one of auto, process, none"),
    ("bench", ["bench.dtypes=[fp32,fp8]"], "bench.dtypes", "fp8", "choose one of fp32, fp16, bf16"),
    ("bench", ["bench.modes=[fast]"], "bench.modes", "fast", "choose one of plain, tiled, sliced"),
    ("bench", ["bench.ops=decode"], "bench.ops", "decode", None),  # a single value is a list of one: valid
    ("bench", ["bench.resolutions=[256,256]"], "bench.resolutions", [256, 256], "values must not repeat"),
    ("bench", ["bench.resolutions=[]"], "bench.resolutions", [], "give at least one value"),
    ("bench", ["bench.min_repeats=20"], "bench.min_repeats", 20, "at most bench.repeats=10"),
    ("bench", ["bench.max_seconds=0"], "bench.max_seconds", 0, "a positive number of seconds"),
    ("bench", ["bench.warmup=-1"], "bench.warmup", -1, "an integer >= 0"),
    ("bench", ["bench.compile=true", "bench.warmup=0"], "bench.warmup", 0, "at least 1 with bench.compile=true"),
    ("bench", ["bench.tile_size=8"], "bench.tile_size", 8, "an integer >= 16"),
    ("ref", ["crop_multiple=0"], "crop_multiple", 0, "the downsampling factor"),
    ("ref", ["batch_size=-4"], "batch_size", -4, "a positive integer"),
]


@pytest.mark.parametrize("app, overrides, key, value, expected", BAD, ids=[" ".join(b[1]) for b in BAD])
def test_a_wrong_value_names_the_key_the_value_and_the_choices(app, overrides, key, value, expected):
    cfg = compose(overrides, app)
    if expected is None:
        validate(cfg, app)
        return
    with pytest.raises(ConfigError) as e:
        validate(cfg, app)
    assert not isinstance(e.value, InvalidConfig), str(e.value)  # one problem, reported alone
    assert (e.value.argument, e.value.value) == (key, value)
    assert str(e.value).startswith(f"invalid {key}={value!r}") and expected in str(e.value)


def test_every_problem_is_listed_at_once():
    cfg = compose(["batch_size=0", "dtype=fp8", "dataset.crop=side", "+batchsiz=4"])
    with pytest.raises(InvalidConfig) as e:
        validate(cfg, "run")
    lines = str(e.value).splitlines()
    assert lines[0] == "4 problems in the run configuration:"
    assert [p.argument for p in e.value.problems] == ["dataset.crop", "dtype", "batch_size", "batchsiz"]
    assert "  invalid dtype='fp8'; choose one of fp32, fp16, bf16" in lines
    assert e.value.argument == "dataset.crop"  # a ConfigError like any other, about the first problem


def test_missing_values_and_keys_are_named():
    with pytest.raises(ConfigError, match=r"invalid dataset.path='\?\?\?'; a value is required: set dataset.path="):
        validate(compose(["dataset=folder"]), "run")
    with pytest.raises(ConfigError, match=r"invalid seed=None; a required key"):
        validate(compose(["~seed"]), "run")
    with pytest.raises(ConfigError, match=r"invalid pipeline.source='\?\?\?'"):
        validate(compose(["task=t2i", "pipeline=local"]), "run")


# -- did you mean -------------------------------------------------------------------------------
@pytest.mark.parametrize("override", ["+batchsize=4", "++batchsize=4"])
def test_an_added_misspelt_key_suggests_the_real_one(override):
    with pytest.raises(UnknownName) as e:
        validate(compose([override]), "run")
    assert e.value.suggestions == ["batch_size"]
    assert str(e.value) == "unknown key 'batchsize' in batchsize=4; did you mean batch_size?"


def test_a_misspelt_key_in_a_typed_section_suggests_the_real_one():
    with pytest.raises(UnknownName, match=r"unknown key 'bench.resolutons' .*did you mean bench.resolutions\?"):
        validate(compose(["+bench.resolutons=[64]"], "bench"), "bench")
    validate(compose(["+dataset.extra_option=1"]), "run")  # datasets are open: their _target_ checks the rest


@pytest.mark.parametrize(
    "app, overrides, name, suggestions",
    [
        ("run", ["batchsize=4"], "batchsize", ["batch_size"]),
        ("run", ["++chanels_last=false"], "chanels_last", ["channels_last"]),
        ("bench", ["batch_size=4"], "batch_size", []),  # bench has bench.batch_sizes, not batch_size
        ("run", ["t2i.bach_size=2"], "t2i.bach_size", ["t2i.batch_size"]),
        ("run", ["+vae=taesd4"], "taesd4", ["taesd", "taesd3"]),
        ("run", ["+vae=[taesd,kl-f9]"], "kl-f9", ["kl-f8"]),
        ("run", ["+vae=taef2,taesd4"], "taesd4", ["taesd", "taesd3"]),  # a -m sweep's choices
        ("run", ["dataset=foldr"], "foldr", ["folder"]),
        ("run", ["metrics=lpip"], "lpip", ["lpips"]),
        ("run", ["task=t2ii"], "t2ii", ["t2i"]),
        ("run", ["task=t2i", "dataset@t2i.reference=cocoo"], "cocoo", ["coco"]),
        ("run", ["pipeline=sd16"], "sd16", ["sd15"]),
    ],
)
def test_the_command_line_is_checked_before_composition(app, overrides, name, suggestions):
    with pytest.raises(UnknownName) as e:
        check_overrides(overrides, app)
    assert (e.value.argument, e.value.suggestions) == (name, suggestions)
    if suggestions:
        assert f"did you mean {', '.join(suggestions)}?" in str(e.value)
    else:
        assert "choose one of" in str(e.value) and "bench" in str(e.value)


def test_valid_command_lines_pass_the_check(tmp_path):
    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "mine.yaml").write_text("mine:\n  _target_: tests.run_standins.Identity\n")
    check_overrides(
        [
            "+vae=[taesd,taef2]",
            "+vae=glob(*)",
            "dataset=folder",
            "dataset.path=/x",
            "++vae.taesd.source=/w",
            "batch_size=1,2",
            "~seed",
            "hydra.run.dir=/tmp",
            "hydra/launcher=joblib",
            "dataset@t2i.reference=null",
        ],
        "run",
    )
    check_overrides(["+vae=mine", f"hydra.searchpath=[file://{tmp_path}]"], "run")  # a user's own VAE config
    check_overrides(["+vae=mine", "hydra.searchpath=[pkg://my.conf]"], "run")  # options not listed: left to Hydra
    check_overrides(["not an override"], "run")  # left to Hydra's own parse error


# -- through the real CLI -----------------------------------------------------------------------
def test_cli_did_you_mean_is_one_line_with_status_2(tmp_path):
    for args, expected in [
        (["run", "+vae=taesd4"], "unknown vae 'taesd4' in +vae=taesd4; did you mean taesd, taesd3? (choose one of "),
        (["run", "batchsize=4", "+vae=taesd"], "unknown key 'batchsize' in batchsize=4; did you mean batch_size?"),
        (["bench", "dataset=foldr"], "unknown dataset 'foldr' in dataset=foldr; did you mean folder?"),
    ]:
        r = evalvae_main([*args, f"hydra.run.dir={tmp_path / 'out'}"], cwd=tmp_path)
        assert r.returncode == 2, r.stderr
        assert r.stderr.splitlines() == [r.stderr.splitlines()[0]] and r.stderr.startswith(f"evalvae: {expected}")
        assert not (tmp_path / "out").exists()  # refused before Hydra made a run directory


def test_cli_lists_every_wrong_value_and_cfg_job_still_prints(tmp_path):
    r = evalvae_main(["run", "+vae=taesd", "batch_size=0", "dtype=fp8", f"hydra.run.dir={tmp_path}"], cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "evalvae: 2 problems in the run configuration:" in r.stderr
    assert "  invalid dtype='fp8'; choose one of fp32, fp16, bf16" in r.stderr
    assert "  invalid batch_size=0; a positive integer" in r.stderr
    r = evalvae_main(["run", "--cfg", "job", "+vae=taesd", "batch_size=0"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    printed = OmegaConf.create(r.stdout)  # the composed config, unvalidated, for inspection
    assert printed.batch_size == 0 and printed.vae.taesd.source == "madebyollin/taesd"
