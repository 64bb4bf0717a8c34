"""DeepN-JPEG (Liu et al. 2018): DNN-oriented JPEG quantization tables.

Zihao Liu, Tao Liu, Wujie Wen, Lei Jiang, Jie Xu, Yanzhi Wang, Gang Quan.
"DeepN-JPEG: A Deep Neural Network Favorable JPEG-based Image Compression
Framework." DAC 2018. https://arxiv.org/abs/1803.05788

Modules: `statistics` (frequency component analysis), `tables` (PLM,
standard tables, IJG scaling, table files), `codec` (JPEG files with custom
tables), `design` (the table design job), `rate_accuracy` (curves and gains
against standard JPEG), `fit` (tables fitted to a model at byte budgets; not
in the paper).
"""

from deepn_jpeg import codec, design, fit, rate_accuracy, statistics, tables

__all__ = ["codec", "design", "fit", "rate_accuracy", "statistics", "tables"]
