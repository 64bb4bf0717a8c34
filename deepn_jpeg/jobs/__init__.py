"""DeepN-JPEG's jobs.

Import `deepn_jpeg.jpeg`, `deepn_jpeg.analysis` and `compression_helps`'
`core`, `sources`, `models`, `engine`.

`design`, `fit`, `sensitivity`, `rate_accuracy`, `crossfit`, `ship`,
`methods` (every design by name), `report` (printed tables and plots).
"""
