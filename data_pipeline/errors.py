"""The one exception type for mistakes a user can fix (bad config, bad input file, missing checkpoint).

The CLI prints its message alone, without a traceback; internal invariants use plain asserts instead.
"""


class UserError(Exception):
    """A problem the user caused and can fix; the message names the file or key and the fix."""
