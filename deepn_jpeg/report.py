"""DeepN-JPEG's printed tables and plots: design, rate-accuracy, fitting.

Mirrors `compression_helps/report.py`: the jobs compute, this module shows.
"""

from __future__ import annotations

__all__: list[str] = []

# --- design (design_qtable.py) ---

# --- rate-accuracy (eval_deepn_jpeg.py) ---

# --- fitting (fit_qtable.py) ---
