import subprocess
import sys
import time


def paralab(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "paralab", *args], capture_output=True, text=True)


def test_help_is_fast_because_nothing_heavy_is_imported():
    start = time.perf_counter()
    result = paralab("--help")
    assert result.returncode == 0 and "bench" in result.stdout
    assert time.perf_counter() - start < 2.0
    probe = "import sys, paralab.cli; print(sorted({'torch','lightning'} & set(sys.modules)))"
    assert (
        subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip()
        == "[]"
    )


def test_list_shows_every_kind_with_descriptions():
    result = paralab("list")
    assert result.returncode == 0
    for heading in ("models:", "datasets:", "paradigms:", "experiments:", "benchmarks:"):
        assert heading in result.stdout
    assert "cnn" in result.stdout and "scikit-learn digits" in result.stdout
    only = paralab("list", "models").stdout
    assert "resnet18" in only and "datasets:" not in only


def test_print_config_shows_the_resolved_config():
    result = paralab("run", "quickstart_offline", "model=vit", "--print-config")
    assert result.returncode == 0
    assert "name: vit" in result.stdout and "patch_size: 4" in result.stdout
