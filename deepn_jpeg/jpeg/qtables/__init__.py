"""Table sets shipped with the package: `<name>.json` files in this folder.

Each file is a `tables_io.save_json` document (it may fix its chroma
subsampling and encoder) and loads by name: `tables.load_tableset("<name>")`,
`codec.encode(image, tables="<name>")`, `eval_deepn_jpeg.py --tables=<name>`.
`tables.shipped_names()` lists them. A package (not a plain folder) so that
`importlib.resources` finds it in editable and in normal installs.
"""
