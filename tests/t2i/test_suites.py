"""Prompt suites: the real PartiPrompts/DrawBench/GenEval/COCO files, synthetic files, filters, URLs."""

from __future__ import annotations

import csv
import functools
import http.server
import json
import threading
import urllib.error

import pandas as pd
import pytest

from evalvae.config import compose, instantiate
from evalvae.errors import ConfigError
from evalvae.t2i import suites
from evalvae.t2i.suites import SuiteUnavailable


def suite_of(overrides: list[str]):
    return instantiate(compose(["task=t2i", *overrides]).suite)


def test_parti_from_the_assets(assets):
    path = assets / "prompts" / "partiprompts.tsv"
    s = suite_of(["suite=parti", f"suite.path={path}"])
    frame = pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE, dtype=str, keep_default_na=False)
    assert len(s) == len(frame) == 1632
    assert [p.text for p in s.prompts] == [t.strip() for t in frame.Prompt]  # surrounding whitespace is stripped
    assert [p.category for p in s.prompts] == list(frame.Category)
    assert s.describe()["categories"]["Animals"] == 314 and len(s.describe()["categories"]) == 12
    # A TSV prompt that starts with a quote keeps it (csv quoting would have eaten it).
    assert any(p.text.startswith('"G I G G L E"') for p in s.prompts)
    assert s.prompts[0].id == "parti-0000" and len({p.id for p in s.prompts}) == 1632


def test_drawbench_with_its_byte_order_mark(assets):
    s = suite_of(["suite=drawbench", f"suite.path={assets / 'prompts' / 'drawbench.csv'}"])
    assert len(s) == 200 and s.prompts[0].text == "A red colored car." and s.prompts[0].category == "Colors"
    assert len(s.describe()["categories"]) == 11


def test_geneval_tags_are_categories(assets):
    path = assets / "prompts" / "geneval.jsonl"
    s = suite_of(["suite=geneval", f"suite.path={path}"])
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    assert len(s) == len(records) == 553
    assert [(p.text, p.category) for p in s.prompts] == [(r["prompt"], r["tag"]) for r in records]


def test_coco_takes_the_first_caption_of_each_image(assets):
    path = assets / "images" / "coco-val2017-mini" / "captions.json"
    s = suite_of(["suite=coco", f"suite.path={path}"])
    doc = json.loads(path.read_text())
    images = sorted(doc["images"], key=lambda im: im["file_name"])
    first = {}
    for ann in sorted(doc["annotations"], key=lambda a: a["id"]):
        first.setdefault(ann["image_id"], ann["caption"].strip())
    assert len(s) == 120 and [p.text for p in s.prompts] == [first[im["id"]] for im in images]
    assert {p.category for p in s.prompts} == {"all"}


def test_builtin_suite_covers_its_categories():
    s = suite_of([])
    cats = s.describe()["categories"]
    assert len(s) == 60 and set(cats) == {
        "face-closeup",
        "face-small",
        "text",
        "hands",
        "foliage",
        "fabric",
        "hair",
        "pattern",
        "line-art",
        "color",
        "low-light",
    }
    assert min(cats.values()) >= 5 and len({p.text for p in s.prompts}) == 60


def test_filters_keep_ids_stable():
    full = suite_of([])
    text = suite_of(["suite.categories=[text,hands]", "suite.limit=8"])
    assert len(text) == 8 and {p.category for p in text.prompts} <= {"text", "hands"}
    by_id = {p.id: p for p in full.prompts}
    assert all(by_id[p.id] == p for p in text.prompts)  # same id, same prompt, whatever the filter
    assert text.describe()["categories_filter"] == ["text", "hands"] and text.describe()["limit"] == 8
    assert [p.id for p in suite_of(["suite.limit=3"]).prompts] == [p.id for p in full.prompts[:3]]
    s = suites.make_suite("x", "mem", "0", [("a", "c1"), ("b", "c2"), ("c", "c1")], categories="c1")
    assert [(p.id, p.text) for p in s.prompts] == [("x-0000", "a"), ("x-0002", "c")]  # numbered before filtering


def test_bad_filters_name_the_choices():
    with pytest.raises(ConfigError, match=r"suite.categories='nope'.*face-closeup"):
        suite_of(["suite.categories=[nope]"])
    with pytest.raises(ConfigError, match="suite.limit"):
        suite_of(["suite.limit=0"])


def test_synthetic_files_of_every_format(tmp_path):
    (tmp_path / "p.txt").write_text("a cat\n\n  a dog  \n")
    s = suite_of(["suite=file", f"suite.path={tmp_path / 'p.txt'}"])
    assert [p.text for p in s.prompts] == ["a cat", "a dog"] and s.prompts[1].id == "file-0001"

    pd.DataFrame({"id": [1, 2, 3], "caption": ["x, with a comma", "y", ""], "group": ["g1", "g2", "g1"]}).to_csv(
        tmp_path / "p.csv", index=False
    )
    s = suite_of(["suite=file", f"suite.path={tmp_path / 'p.csv'}", "suite.category_column=group"])
    assert [(p.text, p.category) for p in s.prompts] == [("x, with a comma", "g1"), ("y", "g2")]  # empty prompt dropped

    (tmp_path / "p.tsv").write_text('text\tCategory\n"quoted" start\tA\nplain\tB\n')
    s = suite_of(["suite=file", f"suite.path={tmp_path / 'p.tsv'}"])
    assert [(p.text, p.category) for p in s.prompts] == [('"quoted" start', "A"), ("plain", "B")]

    (tmp_path / "p.jsonl").write_text('{"q": "first", "tag": "t"}\n\n{"q": "second", "tag": "u"}\n')
    s = suite_of(["suite=file", f"suite.path={tmp_path / 'p.jsonl'}", "suite.column=q"])
    assert [(p.text, p.category) for p in s.prompts] == [("first", "t"), ("second", "u")]

    (tmp_path / "prompts.list").write_text("one\ntwo\n")
    s = suite_of(["suite=file", f"suite.path={tmp_path / 'prompts.list'}", "suite.format=txt"])
    assert len(s) == 2


def test_bad_files_fail_in_one_line(tmp_path):
    pd.DataFrame({"words": ["a"]}).to_csv(tmp_path / "p.csv", index=False)
    with pytest.raises(ConfigError, match=r"suite.column.*choose one of words"):
        suite_of(["suite=file", f"suite.path={tmp_path / 'p.csv'}"])
    with pytest.raises(ConfigError, match=r"suite.column='nope'"):
        suite_of(["suite=file", f"suite.path={tmp_path / 'p.csv'}", "suite.column=nope"])
    (tmp_path / "p.bin").write_text("x")
    with pytest.raises(ConfigError, match=r"suite.format='bin'; choose one of txt, csv, tsv, jsonl"):
        suite_of(["suite=file", f"suite.path={tmp_path / 'p.bin'}"])
    with pytest.raises(ConfigError, match="does not exist"):
        suite_of(["suite=file", f"suite.path={tmp_path / 'missing.csv'}"])


@pytest.fixture()
def http_folder(tmp_path):
    """A local HTTP server over a folder, counting requests."""
    root = tmp_path / "served"
    root.mkdir()
    hits = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()


def test_a_url_is_downloaded_once_into_the_cache(tmp_path, http_folder):
    root, base, hits = http_folder
    (root / "prompts.tsv").write_text("Prompt\tCategory\tChallenge\tNote\na red apple\tProduce & Plants\tBasic\t\n")
    overrides = ["suite=parti", f"suite.path={base}/prompts.tsv", f"cache_dir={tmp_path / 'cache'}"]
    first, second = suite_of(overrides), suite_of(overrides)
    assert [p.text for p in first.prompts] == [p.text for p in second.prompts] == ["a red apple"]
    assert hits == ["/prompts.tsv"]
    assert len(list((tmp_path / "cache" / "suites").rglob("prompts.tsv"))) == 1
    with pytest.raises(SuiteUnavailable, match=r"suite parti: could not download .*missing.tsv.*suite.path="):
        suite_of(["suite=parti", f"suite.path={base}/missing.tsv", f"cache_dir={tmp_path / 'cache'}"])


def test_a_download_error_without_a_message_still_reads_as_one_line(tmp_path, monkeypatch):
    def reset(*_, **__):
        raise urllib.error.URLError(ConnectionResetError())

    monkeypatch.setattr(suites, "download", reset)
    with pytest.raises(
        SuiteUnavailable, match=r"could not download http://example\.invalid/p\.tsv \(URLError\); fetch it"
    ):
        suite_of(["suite=parti", "suite.path=http://example.invalid/p.tsv", f"cache_dir={tmp_path / 'cache'}"])
