"""The web app (FastAPI, the ``serve`` extra): one router per concern composed by :func:`pipeline.web.app.create_app`
over an injected database, thumbnail store and models; ``serve`` runs it (:mod:`pipeline.web.serve`)."""
