"""The lab: what runs, measures and reports experiments at scale (the pipeline runner and its presets, the
comparison and the report, the run planner, image preparation, the benchmarks). It imports the core (the
top-level scripts); the core never imports it. Run its scripts from the repository root: python lab/reproduce.py
"""
import json
from pathlib import Path


def load(path):
    """A result file of the lab (compare.py may write NaN), or None when it is not there."""
    return json.loads(Path(path).read_text()) if Path(path).exists() else None


def write_json(path, obj):
    """The lab's result files: `obj` as strict JSON (runtime.dumps), written atomically (runtime.atomic_write)."""
    import runtime
    runtime.atomic_write(path, lambda tmp: Path(tmp).write_text(runtime.dumps(obj, indent=1) + "\n"))
