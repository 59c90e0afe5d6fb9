"""Errors by kind: what a user supplied (`FvlmInputError`), and a step that failed on its own
(`FvlmRuntimeError`). Programming errors inside the library are plain `ValueError`/`TypeError`."""


class FvlmInputError(ValueError):
    """Input that cannot be used (a file, a text, a setting, a checkpoint): the message says what is
    wrong and, where possible, what to do. Front ends show it as one line, without a traceback."""


class FvlmRuntimeError(RuntimeError):
    """A step that should have worked failed (a crashed TotalSegmentator worker). Front ends show
    it as a failure with its traceback; a child process's own output is chained as the cause."""


class ProcessOutput(Exception):
    """What a failed child process wrote to stderr, chained as the cause of an `FvlmRuntimeError`."""
