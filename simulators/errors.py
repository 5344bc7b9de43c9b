"""The base error of the simulators; each message names the value and the fix."""


class SimulatorError(Exception):
    """A simulator cannot go on; the message names what failed and what to do."""
