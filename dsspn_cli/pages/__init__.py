"""Pages a browser opens straight from disk: the concept tree (``dsspn hierarchy show --format
html``, ``tree.py``) and a folder of predictions (``dsspn predict --html``, ``predictions.py``).

The templates are real files beside this module (``tree.html``, ``predictions.html`` and their
stylesheets and scripts), readable and lintable on their own and shipped in the wheel as part
of the package. ``build`` inlines a template's ``<link rel="stylesheet">`` and ``<script
src>`` files and the page's data, so that a page is one file that needs no network and no
server. The data goes in as JSON inside ``<script type="application/json">`` with ``<``, ``>``
and ``&`` written as ``\\u`` escapes, so that no name can end the script element; the scripts
only ever put names into the page as text (``textContent``), never as HTML.

Nothing here imports torch: the tree page is a hierarchy command.
"""

from __future__ import annotations

import json
import re
from importlib.resources import files

# The placeholders a template holds, replaced by ``build``.
_STYLESHEET = re.compile(r'<link rel="stylesheet" href="([\w.-]+\.css)">')
_SCRIPT = re.compile(r'<script src="([\w.-]+\.js)"></script>')
_DATA = '<script type="application/json" id="dsspn-data"></script>'
# What would end an inlined element early or open a comment inside it.
_ENDS_ELEMENT = re.compile(r"</(script|style)|<!--", re.IGNORECASE)


def template(name: str) -> str:
    """A template file of this package, as text."""
    return (files(__name__) / name).read_text(encoding="utf-8")


def data_json(doc) -> str:
    """JSON that is safe inside a ``<script>`` element and inside a JS file: ASCII only (so
    U+2028 and U+2029, line ends to older JS parsers, are escaped too), and no ``<``, ``>`` or
    ``&`` that could end the element or start a comment."""
    text = json.dumps(doc, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _inline(name: str, tag: str) -> str:
    text = template(name)
    if _ENDS_ELEMENT.search(text):
        # Only our own files are inlined; this guards against a later edit breaking the page.
        raise RuntimeError(f"dsspn_cli/pages/{name} holds '</{tag}' or '<!--', which would end "
                           "the inlined element; write it another way")
    return f"<{tag}>\n{text}</{tag}>"


def build(page: str, data: dict) -> str:
    """The template ``page`` with its stylesheets, scripts and ``data`` inlined."""
    html = template(page)
    if _DATA not in html:
        raise RuntimeError(f"dsspn_cli/pages/{page} has no data element ({_DATA})")
    # Functions as replacements: the inlined text is taken literally (no backslash escapes).
    html = _STYLESHEET.sub(lambda m: _inline(m.group(1), "style"), html)
    html = _SCRIPT.sub(lambda m: _inline(m.group(1), "script"), html)
    filled = _DATA.replace("></script>", ">" + data_json(data) + "</script>")
    return html.replace(_DATA, filled)


__all__ = ["build", "data_json", "template"]
