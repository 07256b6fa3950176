"""``gradscore report``: the run report of a scheduled training run.

The report module (matplotlib, Jinja2) is imported inside the command, so
``gradscore --help`` never loads them.
"""

import click

from ._common import _Errors, _show_warnings


def register(main):
    """Add the ``report`` command to the ``main`` click group."""

    @main.command()
    @click.argument("run_dir", type=click.Path(file_okay=False))
    @click.option("-o", "--output", type=click.Path(dir_okay=False),
                  help="HTML file to write. Default: RUN_DIR/run-report.html.")
    @click.option("--state", "state_path", type=click.Path(dir_okay=False),
                  help="The schedule's state file. Default: RUN_DIR/schedule.json, or "
                       "the only state file in RUN_DIR.")
    @click.option("--no-rescore", is_flag=True,
                  help="Do not score the exports again (no score distributions or "
                       "cap hits; faster).")
    @click.option("--max-listed", type=click.IntRange(min=0), default=400, show_default=True,
                  help="Dropped examples listed by id.")
    @click.option("-q", "--quiet", is_flag=True, help="No warnings or summary.")
    def report(run_dir, output, state_path, no_rescore, max_listed, quiet):
        """Draw a scheduled run's drops as one self-contained HTML page.

        RUN_DIR holds a DropSchedule state file and the keep-lists of the
        scored epochs, and, if still there, the epoch exports (needed for
        per-class counts, dropped ids and score distributions).

        \b
        Example:
          gradscore report run/        # writes run/run-report.html
        """
        from gradscore.report.run import write_run_report

        _show_warnings(quiet)
        with _Errors():
            path, ctx = write_run_report(run_dir, output, state_path=state_path,
                                         rescore=not no_rescore, max_listed=max_listed)
        if quiet:
            return
        epochs = ctx["epochs"]
        if epochs:
            last = epochs[-1]
            click.echo(f"{len(epochs)} scored epochs ({', '.join(str(e['epoch']) for e in epochs)}); "
                       f"kept {last['kept']} of {last['n']}; report: {path}")
        else:
            click.echo(f"nothing scored yet; report: {path}")
        for e in ctx["not_reproduced"]:
            click.echo(f"Warning: scoring epoch {e}'s export again did not give its keep-list",
                       err=True)
