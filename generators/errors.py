"""The one exception type for problems the user can fix: a bad argument, a bad or foreign file,
a refused setting. The CLI shows it as one line (`studio: error: ...`, exit status 2), the web
app as a message on the page; any other exception is a bug and keeps its traceback.

It is a ValueError, so code (and tests) that caught ValueError for bad input still do; raise
ValueError itself only for a programming error (a caller passing a wrong shape or type).
"""

from __future__ import annotations


class UserError(ValueError):
    """A problem the user can fix; its message says how, in one line."""
