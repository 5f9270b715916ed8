"""What the worker leaves to the operating system at exit (preloaded.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

from rediswq.preloaded import left_at_exit


def _module(name: str, file: str | None, **names: object) -> ModuleType:
    module = ModuleType(name)
    module.__file__ = file
    vars(module).update(names)
    return module


def test_only_added_source_modules_that_nothing_loaded_later_holds_are_left() -> None:
    held, unheld = _module("held", "/lib/held.py"), _module("unheld", "/lib/unheld.py")
    modules = {
        "site": _module("site", "/lib/site.py", helper=unheld),  # loaded before rediswq
        "_speedups": _module("_speedups", "/lib/_speedups.cpython-311-x86_64-linux-gnu.so"),
        "unheld": unheld,
        "held": held,
        "handler": _module("handler", "/app/handler.py", helper=held),  # loaded after the freeze
    }
    frozen = {"site", "_speedups", "unheld", "held"}
    assert left_at_exit({"site"}, frozen, modules) == ["unheld"]


def test_they_go_after_the_atexit_functions_registered_since_the_freeze() -> None:
    # The check registered first runs last; the handler's, registered after the freeze, runs
    # while the modules are still there.
    program = textwrap.dedent(
        """
        import atexit, sys
        import json
        atexit.register(lambda: print(sorted({"json", "rediswq.keys", "shlex"} & set(sys.modules))))
        before = list(sys.modules)
        import rediswq.keys
        from rediswq import preloaded
        preloaded.freeze(before)
        import shlex
        atexit.register(lambda: print("handler's", "rediswq.keys" in sys.modules))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", program], check=True, capture_output=True, text=True
    ).stdout
    assert out.splitlines() == ["handler's True", "['json', 'shlex']"]


def test_what_a_program_loaded_before_rediswq_keeps_is_still_flushed_at_exit(
    tmp_path: Path,
) -> None:
    # The program that runs the worker command is frozen with the rest, and only sys.modules
    # holds it: Python's first pass at exit would free it and leave its globals to the collector.
    record = tmp_path / "record.txt"
    program = textwrap.dedent(
        f"""
        import sys
        out = open({str(record)!r}, "w", encoding="utf-8")
        out.write("kept")

        def unused():  # a function: the module's globals are in a cycle
            return out

        from rediswq.cli import main
        sys.exit(main(["worker", "--help"]))
        """
    )
    subprocess.run([sys.executable, "-c", program], check=True, capture_output=True)
    assert record.read_text() == "kept"


def test_what_a_module_imported_between_rediswq_and_the_command_keeps_is_flushed_at_exit(
    tmp_path: Path,
) -> None:
    # A program that imports the command first and then its own module (the handler's, say):
    # that module is the program's, not the worker's, though loaded after the package.
    record = tmp_path / "record.txt"
    (tmp_path / "mine.py").write_text(
        textwrap.dedent(
            f"""
            out = open({str(record)!r}, "w", encoding="utf-8")
            out.write("kept")

            def unused():  # a function: the module's globals are in a cycle
                return out
            """
        ),
        encoding="utf-8",
    )
    program = textwrap.dedent(
        f"""
        import sys
        from rediswq.cli import main
        sys.path.insert(0, {str(tmp_path)!r})
        import mine
        sys.exit(main(["worker", "--help"]))
        """
    )
    subprocess.run([sys.executable, "-c", program], check=True, capture_output=True)
    assert record.read_text() == "kept"
