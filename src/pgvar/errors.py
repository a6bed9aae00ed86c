"""One exception type for everything a user can get wrong.

The command line turns a :class:`PgvarError` into a single line on stderr and exit code 2;
anything else is a bug in pgvar and keeps its traceback.
"""


class PgvarError(ValueError):
    """A problem with the user's input: an MDP, a policy, an estimator spec or an option."""


class MDPError(PgvarError):
    """An MDP (built in code or read from a file) is malformed. The message names the field."""


class SpecError(PgvarError):
    """An estimator spec, a theta or a command-line value is invalid."""
