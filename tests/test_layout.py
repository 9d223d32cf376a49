"""The project's shape (issue 23): a core of at most ten top-level scripts that import only each other, without a
cycle; a lab beside it that the core never imports; short functions; the copy-alone modules working alone."""
import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CORE = {"train_vit", "train_lm", "fit_laws", "schedule", "flexivit", "expand", "eval_fewshot", "lm", "data", "runtime"}
ALONE = {"flexivit", "lm", "expand", "fit_laws", "schedule"}         # copied alone into other repositories


def project_imports(path, names):
    """The project modules (of `names`, or the lab) that a file imports, at any depth of its code."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module.split(".")[0])
    return out & (names | {"lab"})


def test_the_top_level_is_the_core_and_imports_only_it():
    assert {p.stem for p in ROOT.glob("*.py")} == CORE
    graph = {m: project_imports(ROOT / f"{m}.py", CORE) for m in CORE}
    assert all("lab" not in deps for deps in graph.values()), graph
    assert all(not graph[m] for m in ALONE), {m: graph[m] for m in ALONE}
    done, visiting = set(), []

    def visit(m):                                        # depth-first: a module met again on the path is a cycle
        assert m not in visiting, f"import cycle: {' -> '.join(visiting + [m])}"
        if m not in done:
            visiting.append(m)
            for d in graph[m]:
                visit(d)
            visiting.pop()
            done.add(m)
    for m in CORE:
        visit(m)


def test_no_function_over_60_lines():
    files = [*ROOT.glob("*.py"), *ROOT.glob("lab/*.py")]
    long = []
    for path in files:
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = sum(1 for ln in lines[node.lineno - 1:node.end_lineno] if ln.strip())
                long += [f"{path.name}:{node.name} {n}"] if n > 60 else []
    assert not long, long


def test_fit_laws_and_schedule_work_copied_alone(tmp_path):
    """The laws of two shapes that cross, fitted and scheduled by the two files alone, through their CLIs."""
    for name in ("fit_laws.py", "schedule.py"):
        (tmp_path / name).write_text((ROOT / name).read_text())
    C = np.geomspace(1e10, 1e13, 24)
    for patch, (a, b, c) in {8: (30.0, 0.15, 0.30), 4: (400.0, 0.25, 0.12)}.items():
        run = tmp_path / "logs" / f"p{patch}"
        run.mkdir(parents=True)
        rows = [{"version": 1, "type": "header", "run": run.name, "config": {"model": "V64-4", "patch": patch},
                 "metrics": ["fewshot10_error"]}]
        rows += [{"type": "eval", "step": i + 1, "flops": float(x), "config": {"patch": patch}, "train_loss": 1.0,
                  "fewshot10_error": float(a * x ** -b + c), "wall": float(i)} for i, x in enumerate(C)]
        (run / "log.jsonl").write_text("\n".join(map(json.dumps, rows)) + "\n")
    env = {"PATH": "", "PYTHONPATH": "", "OMP_NUM_THREADS": "1"}
    for cmd in (["fit_laws.py", "--logs", "logs/p8", "logs/p4", "--out", "laws.json", "--bootstrap", "0", "--no-plot"],
                ["schedule.py", "--laws", "laws.json", "--budget", "1e13", "--out", "schedule.json", "--no-plot"]):
        p = subprocess.run([sys.executable, *cmd], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
        assert p.returncode == 0, p.stderr
    stages = json.loads((tmp_path / "schedule.json").read_text())["stages"]
    assert [s["config"]["patch"] for s in stages] == [8, 4], stages          # the laws cross: patch 8, then 4
