"""The project's one exception type for errors a user can cause."""


class BenchError(Exception):
    """A user-facing error: says what was wrong (naming the file or value) and what to do.

    The CLI prints it without a traceback and exits with status 2.
    """
