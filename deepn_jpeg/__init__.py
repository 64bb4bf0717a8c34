"""DeepN-JPEG (Liu et al. 2018): DNN-oriented JPEG quantization tables.

Zihao Liu, Tao Liu, Wujie Wen, Lei Jiang, Jie Xu, Yanzhi Wang, Gang Quan.
"DeepN-JPEG: A Deep Neural Network Favorable JPEG-based Image Compression
Framework." DAC 2018. https://arxiv.org/abs/1803.05788

The parts, from the ground up; a part imports only those before it and
`compression_helps`' `core`, `sources`, `models` and `engine`, never its
`selection`, `multi_input` or `compress` (`tests/test_layout.py`):

- `jpeg`: JPEG files with given tables (tables, table files and sets,
  encoders, the ladder of codecs).
- `analysis`: what the tables are made and judged with (DCT statistics,
  band sensitivities, table families and their search, curves, gains and
  their bootstrap).
- `jobs`: the jobs (design, fit, sensitivity, rate-accuracy, cross-fit,
  ship) and their printed tables and plots.
"""
