"""The one error class a user can fix, at the bottom of the aggregator's layers.

Library modules raise their own subclasses (`ConfigError`, `CheckpointError`, ...) and never
import the CLI; `aggregator.cli` prints any `UserError` as one line, `cat-aggregator: <message>`,
with exit code 2, never a traceback.
"""


class UserError(Exception):
    """A problem the user can fix: a bad argument, config or file, or a request that cannot be met."""
