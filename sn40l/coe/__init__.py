"""Composition of Experts: expert registry, router, HBM expert cache, placement across nodes.

Public API: :func:`load_registry` / :func:`synthetic` (a :class:`CoEConfig`),
:class:`CoERuntime` (``load``, ``serve``, ``reset``, ``occupancy``, ``unload``),
:class:`ServeOptions`, and :func:`demo_section` for ``sn40l demo``.
"""

from sn40l.coe.registry import CoEConfig, load_registry, parse_registry, synthetic


def demo_section(cluster, report=None):
    """The CoE section of ``sn40l demo`` (see :mod:`sn40l.coe.demo`)."""
    from sn40l.coe.demo import demo_section as run  # keeps `import sn40l.coe` free of Ray

    return run(cluster, report)


def __getattr__(name: str):
    # CoERuntime and ServeOptions import Ray; load them on first use only.
    if name in ("CoERuntime", "ServeOptions"):
        from sn40l.coe import runtime

        return getattr(runtime, name)
    raise AttributeError(name)


__all__ = ["CoEConfig", "load_registry", "parse_registry", "synthetic", "CoERuntime",
           "ServeOptions", "demo_section"]
