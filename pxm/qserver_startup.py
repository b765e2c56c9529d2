"""Startup module for bluesky-queueserver (``start-re-manager --startup-module pxm.qserver_startup``).

Importing it builds the namespace (see :mod:`pxm.qserver`); import ``pxm.qserver`` instead
from library code.
"""

from pxm.qserver import namespace_from_env

globals().update(namespace_from_env())
