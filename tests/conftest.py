"""Shared pytest set-up: the repo root on sys.path, one thread per test process (tests are tiny)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

torch.set_num_threads(1)
