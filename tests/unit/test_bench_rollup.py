"""`bench/run_all.py` rolls the committed results up into one table and the README."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def _run_all() -> ModuleType:
    spec = importlib.util.spec_from_file_location("run_all", ROOT / "bench" / "run_all.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_rollup_of_committed_results(tmp_path: Path) -> None:
    run_all = _run_all()
    results = tmp_path / "results"
    results.mkdir()
    for path in (ROOT / "bench" / "results").glob("*.json"):
        if path.name != "summary.json":
            shutil.copy(path, results / path.name)
    assert run_all.main(["--no-run", "--no-readme", "--results", str(results)]) == 0
    summary = json.loads((results / "summary.json").read_text())
    benches = {f["bench"] for f in summary["figures"]}
    assert {"merkle", "gas", "indexer", "metering"} <= benches
    for figure in summary["figures"]:
        if figure["value"] is not None and figure["baseline"]:
            assert figure["ratio"] == figure["value"] / figure["baseline"]
    table = (results / "summary.md").read_text()
    assert table.count("\n| ") == len(summary["figures"]) + 1


def test_readme_table_between_markers(tmp_path: Path) -> None:
    run_all = _run_all()
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{run_all.START}\nold\n{run_all.END}\noutro\n")
    assert run_all.update_readme("| new |\n", readme)
    assert readme.read_text() == f"intro\n{run_all.START}\n| new |\n{run_all.END}\noutro\n"
    bare = tmp_path / "BARE.md"
    bare.write_text("no markers\n")
    assert not run_all.update_readme("| new |\n", bare)
    assert bare.read_text() == "no markers\n"


def test_a_missing_benchmark_fails_the_run(tmp_path: Path) -> None:
    run_all = _run_all()
    bench = run_all.Bench("nothing", "no_such_bench.py", (), (), run_all._generic("nothing"))
    ok, _, log = run_all.run(bench, quick=True, log_dir=tmp_path)
    assert not ok
    assert "does not exist" in Path(log).read_text()
