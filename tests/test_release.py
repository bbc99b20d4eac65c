"""The release path's own checks: tools/check_wheel.py on wheels assembled from real ELF files, and
the [tool.cibuildwheel] smoke-test list that tools/build_wheel.sh shares."""

import importlib.util
import zipfile
from pathlib import Path

import pytest
import torch

import genfast
from genfast import _C

ROOT = Path(__file__).resolve().parents[1]
TORCH_LIB = Path(torch.__file__).parent / "lib"


def _load_check_wheel():
    pytest.importorskip("elftools", reason="tools/check_wheel.py reads ELF files with pyelftools")
    spec = importlib.util.spec_from_file_location("check_wheel", ROOT / "tools" / "check_wheel.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def check_wheel():
    return _load_check_wheel()


BUILT_VARIANT = "cuda" if genfast.build_info()["cuda"] else "cpu"
OTHER_VARIANT = "cpu" if BUILT_VARIANT == "cuda" else "cuda"
EXTENSION_NAME = "genfast/_C.cpython-311-x86_64-linux-gnu.so"
GOMP_NAME = "genfast.libs/libgomp-0123abcd.so.1.0.0"


def _wheel(tmp_path, files: dict[str, Path]) -> str:
    """A wheel holding the given files (archive name -> file on disk) and a WHEEL tag."""
    path = tmp_path / "genfast-0.1.0-cp311-cp311-manylinux_2_34_x86_64.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for name, source in files.items():
            wheel.write(source, name)
        wheel.writestr("genfast-0.1.0.dist-info/WHEEL",
                       "Wheel-Version: 1.0\nTag: cp311-cp311-manylinux_2_34_x86_64\n")
    return str(path)


def _repaired_like(tmp_path, extra: dict[str, Path] | None = None) -> str:
    """This build's extension and a grafted libgomp as auditwheel lays them out (any ELF file
    stands in for libgomp), plus `extra`."""
    extension = Path(_C.__file__)
    return _wheel(tmp_path, {EXTENSION_NAME: extension, GOMP_NAME: extension, **(extra or {})})


def test_a_repaired_wheel_of_this_build_passes(tmp_path, check_wheel):
    facts, problems = check_wheel.check(_repaired_like(tmp_path), BUILT_VARIANT)
    assert problems == []
    assert facts["tag"] == "cp311-cp311-manylinux_2_34_x86_64"
    assert facts["bundled"].startswith(GOMP_NAME)
    assert "libtorch" not in facts["needed"] and "libcudart" not in facts["needed"]


def test_the_wrong_variant_is_refused(tmp_path, check_wheel):
    _, problems = check_wheel.check(_repaired_like(tmp_path), OTHER_VARIANT)
    assert len(problems) == 1 and ".nv_fatbin" in problems[0]


def test_a_bundled_cuda_runtime_is_refused(tmp_path, check_wheel):
    # What a shared cudart looks like once auditwheel has grafted it.
    wheel = _repaired_like(tmp_path, {"genfast.libs/libcudart-0123abcd.so.13": Path(_C.__file__)})
    _, problems = check_wheel.check(wheel, BUILT_VARIANT)
    assert any("only libgomp may be grafted" in problem for problem in problems)
    assert any("must not ship" in problem for problem in problems)


def test_an_extension_that_links_libtorch_is_refused(tmp_path, check_wheel):
    linked_to_torch = TORCH_LIB / "libshm.so"  # a small torch library that needs libtorch_cpu and libc10
    if not linked_to_torch.exists():
        pytest.skip(f"{linked_to_torch} is not part of this torch build")
    wheel = _wheel(tmp_path, {EXTENSION_NAME: linked_to_torch})
    _, problems = check_wheel.check(wheel, "cpu")
    assert any("needs libtorch_cpu.so" in problem for problem in problems)
    assert any("needs libc10.so" in problem for problem in problems)


def test_a_stray_or_missing_extension_is_refused(tmp_path, check_wheel):
    extension = Path(_C.__file__)
    stray = _wheel(tmp_path, {EXTENSION_NAME: extension, "genfast/_C.old.so": extension})
    _, problems = check_wheel.check(stray, BUILT_VARIANT)
    assert any("expected one extension module" in problem for problem in problems)

    (tmp_path / "none").mkdir()
    empty = _wheel(tmp_path / "none", {"genfast/__init__.py": ROOT / "genfast" / "__init__.py"})
    _, problems = check_wheel.check(empty, BUILT_VARIANT)
    assert problems == ["expected one extension module genfast/_C.*.so, found none"]


def test_the_smoke_test_list_names_existing_op_tests():
    tomllib = pytest.importorskip("tomllib")
    cibuildwheel = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["cibuildwheel"]
    sources = cibuildwheel["test-sources"]
    assert "tests/conftest.py" in sources
    for source in sources:
        assert (ROOT / source).is_file(), f"[tool.cibuildwheel] test-sources names missing {source}"
    assert sum(source.startswith("tests/test_") for source in sources) >= 5
    assert "pytest" in cibuildwheel["test-command"] and "tests" in cibuildwheel["test-command"]
