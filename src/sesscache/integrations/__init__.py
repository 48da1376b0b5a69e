"""Glue for the servers Python users run: one module per server, none importing another.

* :mod:`sesscache.integrations.gunicorn`: ``ssl_context = ssl_context_hook(...)`` in
  ``gunicorn.conf.py``.
* :mod:`sesscache.integrations.uvicorn`: ``uvicorn.run(..., ssl_context_factory=...)`` and a
  gunicorn worker class for ``uvicorn-worker``.
* :mod:`sesscache.integrations.hypercorn`: a ``hypercorn.config.Config`` subclass.
* :mod:`sesscache.integrations.twisted`: ``CertificateOptions`` with the cache, and the
  ``sesscache-ssl:`` endpoint string (Daphne, ``twist``).

Each names its store by a URL (:func:`sesscache.store_from_url`) and opens it lazily, once per
worker process, so that the object can be made in a master process (before ``fork()``) or
pickled to spawned workers. aiohttp, tornado, cheroot and Werkzeug take a context the user
makes: the docs have a recipe for each.
"""
