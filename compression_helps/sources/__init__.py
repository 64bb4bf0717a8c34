"""Where images come from; imports only `core`.

`datasets` (the example contract, `Source`, `DataConfig`, subsets),
`folders` (image folders and the sample images), `tfds_source`, `splits`
(the one held-out rule), `guard` (the checks every file passes before it
is read or decoded).
"""
