"""JPEG files with given tables.

Imports `compression_helps`' `core`, `sources`, `models`, `engine`.

`tables` (PLM, Annex K, IJG scaling), `tables_io` (table files, table sets,
the shipped sets), `cjpeg_text` (`cjpeg -qtables` files), `tableset_files`
(table sets in run folders), `markers` (a file's tables and frame, read
from its bytes), `codec` (the encoders), `ladder` (the rungs of codecs
every job evaluates).
"""
