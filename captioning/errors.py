"""The one exception type users see: a message that names the file, row or parameter at fault."""


class CaptioningError(Exception):
    """A problem with the user's input or set-up, reported as one line and a non-zero exit."""


class ParamError(CaptioningError):
    """An invalid value in params.yaml."""

    def __init__(self, key: str, allowed: str, got: object):
        super().__init__(f"params.yaml: {key} must be {allowed}, got {got!r}")
        self.key = key
