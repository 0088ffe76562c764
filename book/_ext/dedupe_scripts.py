"""Sphinx extension: include each inline or linked script only once per page.

With Sphinx 7 the inline configuration scripts of sphinx-thebe and sphinx-togglebutton
end up twice in every page; the second ``const THEBE_JS_URL = ...`` is a JavaScript
error ("Identifier has already been declared"). Drop exact duplicates (an inline
script's file name is None or "", depending on who added it).
"""


def _key(script) -> tuple:
    attributes = getattr(script, "attributes", {}) or {}
    filename = getattr(script, "filename", script)
    return (str(filename or ""), tuple(sorted((k, str(v)) for k, v in attributes.items())))


def _unique(scripts: list) -> list:
    seen, unique = set(), []
    for script in scripts:
        key = _key(script)
        if key not in seen:
            seen.add(key)
            unique.append(script)
    return unique


def _dedupe_registry(app, env, docnames):
    """After every extension has added its scripts (sphinx-thebe adds them here)."""
    app.registry.js_files[:] = _unique(app.registry.js_files)
    builder_files = getattr(app.builder, "_js_files", None)
    if builder_files is not None:
        builder_files[:] = _unique(builder_files)


def _dedupe(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    scripts[:] = _unique(scripts)


def setup(app):
    app.connect("env-before-read-docs", _dedupe_registry, priority=999)
    app.connect("html-page-context", _dedupe, priority=999)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
