"""Errors every layer may raise; the fab tasks turn them into one line and an exit code."""


class DeployFailed(RuntimeError):
    """A host or stage cannot reach the wanted state; the message says why and what to do."""


class Interrupted(DeployFailed):
    """Ctrl-C: the run stopped between two steps."""
