"""The one error type for bad user input.

A :class:`UserError` is raised where input from the user (a command-line value, a dataset file, a config,
a sweep spec, a profile, a result file) is wrong; its message is one line naming the file, field and value.
``mspipe-bench`` prints it without a traceback and exits 2. Every other exception is a bug of ours and keeps
its traceback (exit 1). It subclasses ``ValueError`` so that callers catching bad values keep working.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input from the user: one line naming the file, field and value; the CLI exits 2."""


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (pydantic errors: the first error's location and message)."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        e = errors()[0]
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        return f"{loc}: {msg}" if loc else msg
    return " ".join(str(exc).split())


def read_yaml(path, what: str):
    """Parse the YAML file ``path`` (a ``what``: "sweep spec", "profile", ...). A missing file is a
    ``FileNotFoundError`` naming it, invalid YAML a :class:`UserError` with the parser's message on one line."""
    from pathlib import Path

    import yaml

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} {p} not found")
    try:
        return yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"{p}: not valid YAML: {one_line(exc)}") from None
