"""Helpers every command module uses: errors as ``Error: ...``, warnings on stderr.

``main.py`` and ``onnx_commands.py`` both import from here, so neither
imports the other for them.
"""

import sys
import warnings

import click

import gradscore
from gradscore.errors import GradscoreError


def _fail(message):
    click.echo(f"Error: {message}", err=True)
    sys.exit(1)


class _ManyValues(click.Option):
    """An option that takes every value up to the next option, as well as
    repeated: ``--history a.h5 b.h5`` and ``--history a.h5 --history b.h5``."""

    def add_to_parser(self, parser, ctx):
        super().add_to_parser(parser, ctx)
        for name in self.opts:
            opt = parser._long_opt.get(name) or parser._short_opt.get(name)
            take = opt.process

            def process(value, state, take=take):
                take(value, state)
                while state.rargs and not state.rargs[0].startswith("-"):
                    take(state.rargs.pop(0), state)

            opt.process = process


class _Errors:
    """Turn library errors into ``Error: ...`` and exit 1 (no traceback)."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            return False
        if issubclass(exc_type, GradscoreError):
            _fail(str(exc))
        if issubclass(exc_type, MemoryError):
            # The reader refuses exports that will not fit before reading;
            # this is the backstop for the scoring that follows.
            _fail(f"out of memory ({exc or 'MemoryError'}); give a smaller export, "
                  "fewer --jobs, --spill always, or run on a machine with more memory")
        if issubclass(exc_type, OSError):
            _fail(f"{getattr(exc, 'filename', '') or ''} {exc.strerror or exc}".strip())
        return False


def _show_warnings(quiet):
    def show(message, category, filename, lineno, file=None, line=None):
        if not quiet:
            click.echo(f"Warning: {message}", err=True)
    warnings.showwarning = show
    warnings.simplefilter("always", gradscore.GradscoreWarning)
