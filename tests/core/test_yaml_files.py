"""Job files are read with bounds: a 10-line "billion laughs" file is refused before any validation."""

import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from diffpir_core.io.yaml_files import MAX_DEPTH, MAX_NODES, YamlLimitError, load_bounded_yaml

LAUGHS = textwrap.dedent(
    """\
    a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
    b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
    c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
    d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
    e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
    f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
    g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
    h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
    i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
    input: *i
    """
)


def test_a_billion_laughs_job_file_is_refused_within_bounded_memory_and_time(tmp_path: Path) -> None:
    """`diffpir run --dry-run` on the file, in a child process capped at 1 GiB of address space and 60 s: it exits
    2 with the message (it grew to 17 GB in validation before)."""
    job_file = tmp_path / "laughs.yaml"
    job_file.write_text(LAUGHS)
    limit = 1 << 30

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit * 4, limit * 4))  # torch's import maps more than it touches

    result = subprocess.run(
        [sys.executable, "-c", "from diffpir_flow.cli.app import main; main()", "run", str(job_file), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=cap,
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert (
        f"error: job file {job_file} expands to more than {MAX_NODES:,} values once its YAML aliases" in result.stderr
    )
    assert result.stderr.count("billion laughs") == 1


def test_bounds_of_a_yaml_text() -> None:
    few = "base: &b {kind: sr, scale: 4}\nvariants: [{task: *b}, {task: *b}]\n"
    assert load_bounded_yaml(few, "f") == {
        "base": {"kind": "sr", "scale": 4},
        "variants": [{"task": {"kind": "sr", "scale": 4}}] * 2,
    }
    assert load_bounded_yaml("", "f") is None
    with pytest.raises(YamlLimitError, match="expands to more than"):
        load_bounded_yaml(LAUGHS, "f")
    with pytest.raises(YamlLimitError, match=f"nests more than {MAX_DEPTH} levels"):
        load_bounded_yaml("[" * (MAX_DEPTH + 2) + "]" * (MAX_DEPTH + 2), "f")
    with pytest.raises(YamlLimitError, match="nests more than"):
        load_bounded_yaml("[" * 100_000 + "]" * 100_000, "f")
    with pytest.raises(YamlLimitError, match="at most 1,048,576 bytes"):
        load_bounded_yaml("a: " + "x" * (1 << 20), "f")
