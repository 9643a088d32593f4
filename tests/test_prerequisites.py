"""Test prerequisites: a missing asset, weights file, optional package or program skips a test, except under CI=true.

Under CI=true it fails the test instead, so that a CI job cannot go green by skipping; ``.ci/run`` sets CI=true
and stops at once when the assets folder is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.helpers import REPO
from tests.prerequisites import in_ci, missing, require_env_dir, require_module, require_program

SKIP, FAIL = pytest.skip.Exception, pytest.fail.Exception


@pytest.mark.parametrize(
    ("value", "ci"),
    [(None, False), ("", False), ("false", False), ("0", False), ("true", True), ("TRUE", True), ("1", True)],
)
def test_ci_is_read_from_the_environment(monkeypatch, value, ci):
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    assert in_ci() is ci


@pytest.mark.parametrize(("ci", "outcome"), [(None, SKIP), ("true", FAIL)], ids=["local", "ci"])
def test_each_missing_prerequisite_skips_locally_and_fails_in_ci(monkeypatch, tmp_path, ci, outcome):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    monkeypatch.delenv("EVALVAE_NO_SUCH_FOLDER", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no program is found
    with pytest.raises(outcome, match="the thing is absent"):
        missing("the thing is absent")
    with pytest.raises(outcome, match=r"evalvae_no_such_module cannot be imported .*; pip install it"):
        require_module("evalvae_no_such_module", "pip install it")
    with pytest.raises(outcome, match=r"\$EVALVAE_NO_SUCH_FOLDER is not set \(make it\)"):
        require_env_dir("EVALVAE_NO_SUCH_FOLDER", "make it")
    with pytest.raises(outcome, match="none of no-such-browser, chromium is on PATH"):
        require_program("no-such-browser", "chromium")
    if ci:
        with pytest.raises(FAIL, match="CI=true requires every test prerequisite"):
            missing("x")


def test_present_prerequisites_are_returned(monkeypatch, tmp_path):
    monkeypatch.setenv("CI", "true")
    assert require_module("json") is sys.modules["json"]
    monkeypatch.setenv("EVALVAE_SOME_FOLDER", str(tmp_path))
    assert require_env_dir("EVALVAE_SOME_FOLDER") == tmp_path
    assert require_program("no-such-browser", "sh") == shutil.which("sh")
    # a variable naming no folder is a broken set-up, never skipped
    monkeypatch.delenv("CI")
    monkeypatch.setenv("EVALVAE_SOME_FOLDER", str(tmp_path / "nope"))
    with pytest.raises(AssertionError, match=r"EVALVAE_SOME_FOLDER=.*nope is not a directory"):
        require_env_dir("EVALVAE_SOME_FOLDER")


PROBE_TESTS = {
    "test_needs_a_package.py": "from tests.prerequisites import require_module\n"
    "require_module('evalvae_no_such_module')\n\ndef test_a():\n    pass\n",
    "test_needs_assets.py": "def test_b(assets):\n    pass\n\ndef test_c(real_weights):\n    pass\n",
    "conftest.py": "from tests.conftest import assets, real_weights  # noqa: F401\n",
}


@pytest.mark.slow  # pytest in a fresh interpreter
@pytest.mark.parametrize("ci", [None, "true"], ids=["local", "ci"])
def test_a_suite_missing_its_prerequisites_is_skipped_locally_and_fails_in_ci(tmp_path, ci):
    """The module-level import check and the ``assets``/``real_weights`` fixtures, seen by pytest itself."""
    for name, text in PROBE_TESTS.items():
        (tmp_path / name).write_text(text)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "EVALVAE_TEST_ASSETS", "EVALVAE_TEST_WEIGHTS")}
    env.update(PYTHONPATH=str(REPO), PYTEST_DISABLE_PLUGIN_AUTOLOAD="1", **({"CI": ci} if ci else {}))
    args = ["-p", "no:cacheprovider", "-rA", "--continue-on-collection-errors"]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", *args, str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = proc.stdout
    if ci:
        assert proc.returncode != 0, out
        assert "3 errors" in out, out
        assert "ERROR test_needs_a_package.py" in out and "evalvae_no_such_module cannot be imported" in out
        assert "ERROR test_needs_assets.py::test_b" in out and "$EVALVAE_TEST_ASSETS is not set" in out
        assert "ERROR test_needs_assets.py::test_c" in out and "$EVALVAE_TEST_WEIGHTS is not set" in out
        assert "skipped" not in out
    else:
        assert proc.returncode == 0, out
        assert "3 skipped" in out and "error" not in out.lower(), out


def test_ci_run_stops_without_the_assets_folder(tmp_path):
    script = REPO / ".ci" / "run"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    assert "export CI=true" in script.read_text()
    checkout = tmp_path / "checkout"
    (checkout / ".ci").mkdir(parents=True)
    shutil.copy(script, checkout / ".ci" / "run")
    # PATH holds bash and dirname only: were the check to let it through, nothing past it (pip, python) could run
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for program in ("bash", "dirname"):
        (bin_dir / program).symlink_to(shutil.which(program))
    proc = subprocess.run(
        ["bash", str(checkout / ".ci" / "run")],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": str(bin_dir), "HOME": str(tmp_path)},
    )
    assert proc.returncode == 1, proc.stderr
    assert f"the test assets folder {tmp_path}/shared/assets is missing" in proc.stderr
