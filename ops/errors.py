"""The one exception type for user mistakes.

Library code raises :class:`LSNetError` for anything the user can fix (a bad flag combination, a
missing file, a malformed list line, a checkpoint that does not fit the model).  Entry points catch
it once, print ``error: <message>`` and exit with status 2.  Any other exception is a bug and keeps
its traceback.
"""


class LSNetError(Exception):
    """A user-facing error; its message is one line naming the file, line or flag at fault."""
