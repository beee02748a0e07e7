"""The one exception type the CLI turns into a single line and exit code 2."""


class BenchlabError(Exception):
    """A user-facing problem: bad input, a missing tool, a service that never came up."""
