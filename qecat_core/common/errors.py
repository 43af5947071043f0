"""User-facing errors: one line, naming the file/field and what is allowed."""


class QecatError(Exception):
    """An error caused by user input; the CLI prints it as one line and exits with status 2."""


class CatalogError(QecatError):
    """The catalog YAML is malformed or has a value outside what is allowed."""


class InputError(QecatError):
    """A structure file, checkpoint or parquet input cannot be used."""
