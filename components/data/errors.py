"""The one error type of the data layer: always names the file (or dataset) and the problem."""


class DataError(Exception):
    """Raised for bad or missing input data; the message names the file and the problem."""
