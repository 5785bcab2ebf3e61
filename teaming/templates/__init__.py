"""The jinja2 templates the model card and the report are rendered from."""

from __future__ import annotations

import base64
from functools import cache

import jinja2


@cache
def environment(autoescape: bool) -> jinja2.Environment:
    """Templates from this package; block tags on lines of their own leave no trace. HTML is escaped, Markdown not."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("teaming", "templates"),
        autoescape=autoescape,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["b64"] = lambda data: base64.b64encode(data).decode()
    return env


def render(name: str, **context) -> str:
    """Render a template by file name (.html templates are escaped)."""
    return environment(name.endswith(".html.j2")).get_template(name).render(**context)
