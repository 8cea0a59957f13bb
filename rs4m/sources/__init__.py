"""The source-adapter contract: what an adapter is, what it yields, and the registry that finds adapters.

Adapters are plugins. The built-in ones live in the ``rs4m_tools.adapters`` package; any installed package can
add more through the ``rs4m.adapters`` entry-point group, e.g. in its ``pyproject.toml``::

    [project.entry-points."rs4m.adapters"]
    mydata = "mypackage.rs4m_adapter"     # a module whose @register_source classes are the adapters

The entry points are loaded on the first lookup (:func:`get_source`, :func:`list_sources`), never when rs4m is
imported. :mod:`rs4m.sources.layouts` holds the generic machinery most adapters are built on (globs, the folder
and archive walker, split rules).
"""

from rs4m.sources.base import (
    SceneRef,
    ScanProblem,
    SourceAdapter,
    get_source,
    list_sources,
    register_source,
)

__all__ = ["SceneRef", "ScanProblem", "SourceAdapter", "get_source", "list_sources", "register_source"]
