"""DeepN-JPEG (Liu et al. 2018): DNN-oriented JPEG quantization tables.

Zihao Liu, Tao Liu, Wujie Wen, Lei Jiang, Jie Xu, Yanzhi Wang, Gang Quan.
"DeepN-JPEG: A Deep Neural Network Favorable JPEG-based Image Compression
Framework." DAC 2018. https://arxiv.org/abs/1803.05788

Modules: `statistics` (frequency component analysis), `tables` (PLM,
standard tables, IJG scaling; re-exports `tables_io`, the table files),
`tableset_files` (table sets in run folders: found, loaded, written),
`codec` (JPEG files with custom tables), `design` (the table design job),
`rate_accuracy` (the rate-accuracy job against standard JPEG), `comparison`
(curves, gains at equal top-1), `bootstrap` (their paired bootstrap
intervals), `fit`, `search` and `families` (tables fitted to a model at byte
budgets; not in the paper), `sensitivity`, `band_sensitivity` and
`dct_pixels` (tables from the model's sensitivity to each DCT band, after
OptS; not in the paper), `methods` (every design by name), `crossfit`
(every design judged on images it never saw; not in the paper), `ship`
(one design made to ship), `report` (printed tables and plots).
"""

from deepn_jpeg import (
    band_sensitivity,
    bootstrap,
    codec,
    comparison,
    crossfit,
    dct_pixels,
    design,
    families,
    fit,
    methods,
    rate_accuracy,
    report,
    search,
    sensitivity,
    ship,
    statistics,
    tables,
    tables_io,
    tableset_files,
)

__all__ = [
    "band_sensitivity",
    "bootstrap",
    "codec",
    "comparison",
    "crossfit",
    "dct_pixels",
    "design",
    "families",
    "fit",
    "methods",
    "rate_accuracy",
    "report",
    "search",
    "sensitivity",
    "ship",
    "statistics",
    "tables",
    "tables_io",
    "tableset_files",
]
