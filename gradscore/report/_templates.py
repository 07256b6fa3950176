"""The Jinja2 environment of the HTML reports (templates ship in ``templates/``).

Autoescaping is on for every template, so ids, paths and tensor names from
the data are escaped by the engine rather than by hand; undefined names
raise instead of rendering empty.
"""

import functools

from ..errors import GradscoreError


@functools.lru_cache(maxsize=1)
def environment():
    """The shared ``jinja2.Environment`` (imported on first use)."""
    try:
        import jinja2
    except ImportError as exc:
        raise GradscoreError(f"the HTML reports need Jinja2 ({exc}); install it with: "
                             "pip install 'gradscore[report]'") from None
    return jinja2.Environment(
        loader=jinja2.PackageLoader("gradscore.report", "templates"),
        autoescape=True, undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)


def render(name, **context):
    """Render template ``name`` with ``context`` to a string."""
    return environment().get_template(name).render(**context)
