"""Dataset layouts: one module per layout, each with ``scan(root, problems, **options) -> list[dict]``.

:mod:`tumorbench.data.catalog` detects a root's layout and turns a scanner's rows into the catalog; a
new layout is one module here, its entry in ``catalog._SCANNERS`` (and its detection rule), and its test.
"""
