"""Bounded fuzzing of the export reader (the long run: benchmarks/fuzz_reader.py).

Every mutated copy of a valid export either reads back exactly the data it
holds or raises GradscoreError; any other exception, or different data,
fails the test.
"""


import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

# benchmarks/ is a folder of the repository, not an installed package.
from benchmarks import fuzz_reader as F  # noqa: E402


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz-base")
    return {False: F.make_base(str(folder), str_ids=False),
            True: F.make_base(str(folder), str_ids=True)}


def test_the_base_exports_read_back_exactly(bases):
    for base, raw in bases.values():
        assert F.check(base, raw) == "same"


def test_the_oracle_catches_different_data(bases, tmp_path):
    """A guard on the guard: an edit whose expectation is left unchanged
    must be reported as different data."""
    import shutil
    import h5py
    base, raw = bases[False]
    path = str(tmp_path / "edited.h5")
    shutil.copyfile(base, path)
    with h5py.File(path, "r+") as f:
        f["logits"][0, 0] = 123.0
    with pytest.raises(AssertionError, match="different data"):
        F.check(path, raw)


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(F.KINDS), seed=st.integers(0, 2**32 - 1), str_ids=st.booleans())
def test_mutated_exports_read_exactly_or_raise_gradscore_error(bases, tmp_path, kind, seed,
                                                               str_ids):
    base, raw = bases[str_ids]
    F.run_case(base, raw, kind, seed, str(tmp_path))
