"""`unmix serve`: a local web app that separates songs dropped into a browser page.

    store.py     the job list and settings (SQLite) and each job's folder of files
    catalog.py   what a job may ask for (models, targets, formats), checked on the server
    uploads.py   an upload to disk within a size limit, accepted only if it decodes as audio
    runner.py    the bounded pool of workers that separate queued jobs, with progress
    server.py    the HTTP server: pages, the JSON API, server-sent events, downloads, the token
    static/      the page, its script and its style (no CDN: it works offline)

Only the standard library is used (http.server, sqlite3, zipfile), so the app runs wherever
`unmix separate` does, Python 3.12 without NNabla included.
"""
