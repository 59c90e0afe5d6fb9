"""One error type for every input the project refuses, with a message meant for people."""


class FvlmInputError(ValueError):
    """Input that cannot be used: the message says what is wrong and, where possible, what to do."""
