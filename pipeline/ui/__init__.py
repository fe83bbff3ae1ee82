"""`tfxsp ui`: a local, read-only web dashboard over ML Metadata and the run outputs it points to (docs/dashboard.md).

    app.py        the aiohttp application: routes, error pages, the store opened read-only
    pages.py      what each page shows, as plain data (its /api/ twin returns the same)
    charts.py     the SVG charts, drawn here (no JavaScript needed to read a page)
    live.py       which version the model server serves now, asked over REST when it answers
    templates/    the Jinja2 pages, CSS inline
"""
