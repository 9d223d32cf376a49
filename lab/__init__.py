"""The lab: what runs, measures and reports experiments at scale (the pipeline runner and its presets, the
comparison and the report, the run planner, image preparation, the benchmarks). It imports the core (the
top-level scripts); the core never imports it. Run its scripts from the repository root: python lab/reproduce.py
"""
