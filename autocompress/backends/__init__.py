"""Where trials run: ``local`` (this process) or ``ray`` (Ray Tune workers).

Each backend module has ``run(session)``; the loop itself is :mod:`autocompress.session`.
"""
