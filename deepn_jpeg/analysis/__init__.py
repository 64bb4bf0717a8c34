"""How tables are made and judged.

Imports `deepn_jpeg.jpeg` and `compression_helps`' `core`, `sources`,
`models`, `engine`.

`statistics` (DCT band statistics), `dct_pixels` (a differentiable decoder
from DCT coefficients), `band_sensitivity`, `families` (table families),
`search` (one family's search at one byte budget), `comparison` (curves,
frontiers, gains, the verdict), `bootstrap` (their paired intervals).
"""
