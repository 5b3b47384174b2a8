"""What loading the catalog lets go of: the files read and resolved are freed as soon as nothing
uses them, by reference counting, not left to a later full collection (a gateway's resident
memory is its peak while loading)."""
from __future__ import annotations

import contextlib
import gc
import weakref

from engine.catalog import MAPPINGS_DIR, compile_checked, load_dir, resolve_sources


@contextlib.contextmanager
def no_collection():
    was = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def test_the_files_read_and_resolved_are_freed_without_a_collection():
    with no_collection():
        sources, errors = load_dir(MAPPINGS_DIR)
        resolved = resolve_sources(sources, errors)
        assert not errors
        refs = [weakref.ref(s) for s in sources + resolved]
        del sources, resolved
        assert [r() for r in refs if r() is not None] == []


def test_a_compiled_spec_holds_no_reference_to_its_source():
    sources, errors = load_dir(MAPPINGS_DIR)
    resolved = resolve_sources(sources, errors)
    del sources
    # specs with switch cases, each loops and defs read by their use sites: the compiler's
    # contexts for each of them
    picked = [s for s in resolved if "/stream/" in s.path or "/request/" in s.path]
    del resolved
    assert len(picked) > 4
    with no_collection():
        refs, specs = [], []
        for source in picked:
            refs.append(weakref.ref(source))
            specs.append(compile_checked(source, errors))
        del source, picked
        assert not errors and all(specs)
        assert [r().path for r in refs if r() is not None] == []
