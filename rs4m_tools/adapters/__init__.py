"""Source adapters, one module per dataset, registered by name (see :mod:`rs4m_tools.adapters.base`)."""

from rs4m_tools.adapters.base import (  # noqa: F401
    SceneRef,
    ScanProblem,
    SourceAdapter,
    get_source,
    list_sources,
    register_source,
)

from rs4m_tools.adapters import bandstack, folder  # noqa: E402,F401  (registers the adapters)
