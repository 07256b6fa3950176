"""Run the Python blocks of README.md and docs/schema.md, so the docs cannot rot."""

import os
import re

import pytest

from conftest import ROOT

BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def blocks(page):
    with open(os.path.join(ROOT, page), encoding="utf-8") as fh:
        return BLOCK.findall(fh.read())


@pytest.mark.parametrize("page", ["README.md", "docs/schema.md"])
def test_python_blocks_run(page, tmp_path, monkeypatch):
    found = blocks(page)
    assert found, f"{page} has no python blocks"
    monkeypatch.chdir(tmp_path)
    ns = {}
    for code in found:
        if "import torch" in code or "torch," in code.split("\n")[0]:
            pytest.importorskip("torch")
        if "tensorflow" in code:
            pytest.importorskip("tensorflow")
        exec(compile(code, page, "exec"), ns)
