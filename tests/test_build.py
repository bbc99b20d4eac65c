import genfast


def test_build_info_reports_what_was_compiled():
    info = genfast.build_info()
    assert info["version"] == genfast.__version__
    assert isinstance(info["cuda"], bool) and isinstance(info["openmp"], bool)
    if info["cuda"]:
        assert info["cuda_version"] and info["cuda_archs"]
    assert info["cpu_isa"] in ("avx512f", "avx2", "default")
    assert info["compiler"]
