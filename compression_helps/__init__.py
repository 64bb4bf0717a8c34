"""Compression Helps Deep Learning in Image Classification (Yang et al. 2021).

En-Hui Yang, Hossam Amer, Yanbing Jiang. Entropy 23(7):881, 2021.
https://doi.org/10.3390/e23070881

The parts, each a subpackage, from the ground up; a part imports only the
parts listed before it (`tests/test_layout.py` enforces it, and that no
module imports `experiments` and no two modules import each other in a
circle):

- `core`: run infrastructure (files written atomically, run folders,
  progress, native log filtering, setting checks, the ImageNet classes).
  Imports nothing of ours.
- `sources`: where images come from (folders, TFDS, splits, the guard every
  file passes). Imports `core`.
- `models`: classifiers (the registry, EfficientNet-Lite, checkpoints).
  Imports `core`.
- `engine`: the JPEG candidates and their evaluation by a model, and the
  set-up every job shares. Imports `core`, `sources`, `models`.
- `selection`: paper 1's selectors, reports and main job. Imports the
  above.
- `multi_input`: paper 1's multi-input model, its training and export.
  Imports `core`, `sources`, `models`, `engine`.
- `compress`: the smallest file that keeps a model's answer (beyond the
  papers). Imports the above but `multi_input`, and `deepn_jpeg.jpeg`
  (the ladder of codecs).
"""
