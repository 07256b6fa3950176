"""Run every ```python block of the framework pages, so the docs cannot rot.

Blocks of one page run in order in one namespace, in a fresh temporary
folder, with their source registered in ``linecache`` as a script's would be
(TensorFlow's AutoGraph reads the source of the functions it converts). A
warning that a reader running the page as a script would see (anything but
the deprecation and resource warnings Python hides by default) fails the
test. A ``<!-- requires: mod1, mod2 -->`` comment says that the blocks from
there to the end of the page need those modules. When one is missing, the
rest of the page is left out: the test is skipped if no block ran, else it
passes with a warning that names what was left out.
"""

import importlib
import linecache
import os
import re
import warnings

import pytest

from conftest import DOCS  # noqa: E402
PAGES = ["pytorch.md", "keras.md", "numpy-jax.md", "lightning.md", "huggingface.md",
         "scaling.md"]

# Warnings a page cannot avoid, raised by a library about itself or another
# library, as (category name, start of message).
UPSTREAM_WARNINGS = [
    # Lightning 2.6 calls a torch pytree API that torch 2.13 deprecates.
    ("FutureWarning", "`isinstance(treespec, LeafSpec)` is deprecated"),
    # Lightning says so on every resume into the folder a ModelCheckpoint
    # saves to (docs/lightning.md tells the reader).
    ("UserWarning", "Checkpoint directory "),
    # A Dask scheduler serves HTTP on 8787 when free, else on a random port
    # and says so (docs/scaling.md's local cluster, when another one runs).
    ("UserWarning", "Port 8787 is already in use"),
]

_FENCE = re.compile(r"^```(\S*)\s*$")
_REQUIRES = re.compile(r"<!--\s*requires:\s*([\w.,\s-]+?)\s*-->")


def parse(text):
    """``[(first_line, code, requires)]`` for each python block, in order."""
    blocks, requires = [], []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = _REQUIRES.search(lines[i])
        if m:
            requires = requires + [r.strip() for r in m.group(1).split(",") if r.strip()]
        fence = _FENCE.match(lines[i])
        if fence:
            lang, start = fence.group(1), i + 1
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                i += 1
            if i == len(lines):
                raise AssertionError(f"unclosed ``` fence opened at line {start}")
            if lang == "python":
                blocks.append((start + 1, "\n".join(lines[start:i]) + "\n", list(requires)))
        i += 1
    return blocks


def test_parse_finds_blocks_and_requirements():
    text = ("intro\n```python\na = 1\n```\n<!-- requires: numpy, jax -->\n```bash\nls\n```\n"
            "```python\nb = a\n```\n")
    assert parse(text) == [(3, "a = 1\n", []), (10, "b = a\n", ["numpy", "jax"])]
    with pytest.raises(AssertionError, match="unclosed"):
        parse("```python\nx = 1\n")


def _importable(module):
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("page", PAGES)
def test_page_code_runs(page, tmp_path, monkeypatch):
    path = os.path.join(DOCS, page)
    assert os.path.exists(path), f"docs/{page} is missing"
    with open(path, encoding="utf-8") as fh:
        blocks = parse(fh.read())
    assert blocks, f"docs/{page} has no ```python block"
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": f"docs_{page.replace('-', '_').replace('.', '_')}"}
    for n, (line, code, requires) in enumerate(blocks):
        missing = [m for m in requires if not _importable(m)]
        if missing:
            why = (f"docs/{page}: {', '.join(missing)} not installed; ran {n} of "
                   f"{len(blocks)} blocks")
            if n == 0:
                pytest.skip(why)
            warnings.warn(why, UserWarning)
            return
        if "torch" in requires:
            import torch
            torch.set_num_threads(1)  # tiny models; threads only contend
        name = f"docs/{page}, block at line {line}"
        linecache.cache[name] = (len(code), None, code.splitlines(True), name)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for hidden in (DeprecationWarning, PendingDeprecationWarning, ResourceWarning):
                warnings.simplefilter("ignore", hidden)
            exec(compile(code, name, "exec"), namespace)
        shown = [f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})"
                 for w in caught if not any(
                     w.category.__name__ == cat and str(w.message).startswith(text)
                     for cat, text in UPSTREAM_WARNINGS)]
        assert not shown, f"{name} printed warnings:\n" + "\n".join(shown)
