"""DeepN-JPEG (Liu et al. 2018): DNN-oriented JPEG quantization tables.

Zihao Liu, Tao Liu, Wujie Wen, Lei Jiang, Jie Xu, Yanzhi Wang, Gang Quan.
"DeepN-JPEG: A Deep Neural Network Favorable JPEG-based Image Compression
Framework." DAC 2018. https://arxiv.org/abs/1803.05788

Modules: `statistics` (frequency component analysis), `tables` (PLM,
standard tables, IJG scaling, table files), `codec` (JPEG files with custom
tables), `design` (the table design job), `rate_accuracy` (the rate-accuracy
job against standard JPEG), `comparison` (curves, gains at equal top-1 and
their bootstrap intervals), `fit` and `families` (tables fitted to a model at
byte budgets; not in the paper), `report` (printed tables and plots).
"""

from deepn_jpeg import (
    codec,
    comparison,
    design,
    families,
    fit,
    rate_accuracy,
    report,
    statistics,
    tables,
)

__all__ = [
    "codec",
    "comparison",
    "design",
    "families",
    "fit",
    "rate_accuracy",
    "report",
    "statistics",
    "tables",
]
