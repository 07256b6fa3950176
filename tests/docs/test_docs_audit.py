"""docs/audit.md runs: its ``gradscore`` command lines and its Python blocks, in order.

The page starts from a small image folder ``images/`` and a small ONNX
encoder ``encoder.onnx`` in the current folder, and (its text and
embeddings sections) ``reviews.csv``, ``text-encoder/`` and
``embeddings.parquet``; this test makes them (see tests/audit_data.py and
benchmarks/audit/textset.py), then runs each ```sh block's ``gradscore ...`` lines
through click's runner and each ```python block in one namespace, in the
page's order, and fails on a non-zero exit, an exception or a warning.
"""

import os
import re
import shlex
import warnings

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("PIL")
pytest.importorskip("matplotlib")

from click.testing import CliRunner  # noqa: E402

from gradscore_cli.main import main as cli  # noqa: E402

import audit_data as AD  # noqa: E402
from conftest import DOCS  # noqa: E402

PAGE = os.path.join(DOCS, "audit.md")
_FENCE = re.compile(r"^```(\S*)\s*$")


def blocks(text):
    """``[(lang, first_line, code)]`` for the page's sh and python blocks, in order."""
    out, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m:
            start = i + 1
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                i += 1
            if m.group(1) in ("sh", "python"):
                out.append((m.group(1), start + 1, "\n".join(lines[start:i]) + "\n"))
        i += 1
    return out


def commands(code):
    """The ``gradscore`` command lines of a sh block (comments stripped)."""
    return [shlex.split(line, comments=True)[1:] for line in code.splitlines()
            if line.startswith("gradscore ")]


def test_blocks_and_commands_are_parsed():
    text = "```sh\npip install x\ngradscore audit m.onnx d/ -o a/  # note\n```\n" \
           "```python\nx = 1\n```\n```text\nno\n```\n"
    got = blocks(text)
    assert [(lang, line) for lang, line, _ in got] == [("sh", 2), ("python", 6)]
    assert commands(got[0][2]) == [["audit", "m.onnx", "d/", "-o", "a/"]]


def text_and_embeddings():
    """``reviews.csv``, ``text-encoder/`` and ``embeddings.parquet`` for the page's
    text and embeddings sections (benchmarks/audit/textset.py builds them offline)."""

    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq
    from tokenizers import Tokenizer

    from benchmarks.audit import textset as T

    d = T.generate(150, num_classes=3, seed=0, length=(20, 40))
    pcsv.write_csv(pa.table({"text": d["text"], "label": d["label"]}), "reviews.csv")
    os.makedirs("text-encoder")
    tok = T.train_tokenizer(d["text"], "text-encoder/tokenizer.json")
    T.export_encoder("text-encoder/encoder.onnx", Tokenizer.from_file(tok).get_vocab_size())
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 20)
    emb = (rng.normal(size=(60, 16)) + 3 * np.eye(3, 16)[labels]).astype(np.float32)
    pq.write_table(pa.table({"embedding": list(emb), "label": labels}), "embeddings.parquet")


def test_audit_page_runs(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    pytest.importorskip("tokenizers")
    monkeypatch.chdir(tmp_path)
    AD.image_folder("images", names=("circle", "square", "triangle"), per_class=20)
    AD.encoder("encoder.onnx")
    text_and_embeddings()
    with open(PAGE, encoding="utf-8") as fh:
        page = blocks(fh.read())
    ran = 0
    namespace = {"__name__": "docs_audit"}
    for lang, line, code in page:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for hidden in (DeprecationWarning, PendingDeprecationWarning, ResourceWarning):
                warnings.simplefilter("ignore", hidden)
            if lang == "sh":
                for args in commands(code):
                    r = CliRunner().invoke(cli, args, catch_exceptions=False)
                    assert r.exit_code == 0, f"docs/audit.md line {line}: gradscore " \
                                             f"{' '.join(args)}\n{r.output}"
                    assert "Warning:" not in r.output, r.output
                    ran += 1
            else:
                exec(compile(code, f"docs/audit.md, block at line {line}", "exec"), namespace)
                ran += 1
        shown = [f"{w.category.__name__}: {w.message}" for w in caught]
        assert not shown, f"docs/audit.md line {line} warned:\n" + "\n".join(shown)
    assert ran >= 4
