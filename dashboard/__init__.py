"""AI-NERD dashboard: a Flask server hosting three Dash apps.

- ``/``           the explorer (pages under :mod:`dashboard.pages`), viewer role
- ``/admin/``     studies and uploads, admin role
- ``/evaluate/``  the blind expert evaluation, reached only through a private token link

Create it with :func:`dashboard.app.create_app`; nothing heavy happens at import time.
"""
