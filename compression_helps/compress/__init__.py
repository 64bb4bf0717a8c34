"""The smallest file that keeps the answer.

Imports `core`, `sources`, `models`, `engine`, `selection` and
`deepn_jpeg.jpeg`.

`compress` (the job), `output_folder` (the `--out` folder or TFRecords),
`report` (manifest, summary, plot, `--verify`).
"""
