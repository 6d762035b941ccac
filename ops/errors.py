"""The one exception type for user mistakes.

Library code raises :class:`LSNetError` for anything the user can fix (a bad flag combination, a
missing file, a malformed list line, a checkpoint that does not fit the model).  Entry points catch
it once, print ``error: <message>`` and exit with status 2.  Any other exception is a bug and keeps
its traceback.  :class:`ArgumentParser` gives argparse's own errors the same one-line form.
"""
import argparse
import os


class LSNetError(Exception):
    """A user-facing error; its message is one line naming the file, line or flag at fault."""


def user_message(exc):
    """The one-line message of ``exc``.

    A DataLoader worker re-raises an error in the main process with the worker's whole traceback
    in the message ("Caught LSNetError in DataLoader worker process 0. Original Traceback ...");
    only its last line, the original message, is meant for the user.
    """
    msg = str(exc)
    if msg.startswith('Caught ') and 'Traceback' in msg:
        last = msg.rstrip().splitlines()[-1]
        for prefix in ('ops.errors.LSNetError: ', 'LSNetError: '):
            if last.startswith(prefix):
                return last[len(prefix):]
        return last
    return msg


def make_folder(path, message):
    """``os.makedirs(path, exist_ok=True)``; a folder that cannot be made (a file in the way, no
    permission) is a user error: ``message`` and the system's reason, in one line."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise LSNetError('{} ({})'.format(message, e.strerror)) from None


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose command-line mistakes end like every other user error: one
    ``error: <message>`` line (argparse names the flag: "argument --test_crops: invalid choice: ...")
    and exit status 2, instead of the whole usage text first.  ``-h`` still prints the full help."""

    def error(self, message):
        self.exit(2, 'error: {} (see {} -h)\n'.format(message, self.prog))
