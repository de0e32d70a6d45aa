"""Where trials run: ``local`` (this process) or ``ray`` (Ray Tune workers).

Each backend module has ``run(session)``; the loop itself is :mod:`autocompress.study.session`.
"""

__all__ = [
    "local",
    "ray",
]  # each a module with ``run(session)``; imported by name, Ray only when used
