"""The gallery and the match log: SQL models and sessions, FAISS index, enrollment, thresholds, queries, HTTP
API.

Imports nothing of ``facemoe``, ``stages`` or ``pipeline``: enrollment takes the face extractor and the
embedder as injected callables (see :mod:`gallery.enroll`).
"""
