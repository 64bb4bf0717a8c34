"""Paper 1's selectors and main job.

Imports `core`, `sources`, `models`, `engine`.

`selectors` (HRS and the label-free selectors), `report` (the table, CR,
plots), `runner` (the `run_selectors` job).
"""
