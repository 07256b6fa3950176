"""Exceptions and warnings raised by gradscore."""


class GradscoreError(ValueError):
    """Invalid input or a failed operation, with a message that names the
    argument or dataset, the rule broken and the offending values.

    The CLI turns it into ``Error: <message>`` and a non-zero exit code.
    """


class GradscoreWarning(UserWarning):
    """Something was adjusted (for example ``k`` clamped for a small class)
    and the run went on."""
