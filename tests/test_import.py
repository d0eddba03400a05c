"""Importing flet-resilient, or having its pytest plugin installed, changes nothing
in Flet: the seam is installed by the first decorator, `serve()` or test server,
and `uninstall()` puts back exactly what it changed."""

import subprocess
import sys
import textwrap

UNTOUCHED = textwrap.dedent(
    """
    import os
    from flet.controls import base_control, object_patch
    from flet.controls.base_control import BaseControl
    from flet.controls.object_patch import DiffBuilder
    from flet.controls.page import ServiceRegistry
    from flet.messaging import protocol
    from flet.messaging.session import Session
    from flet_web.fastapi import flet_app
    from flet_web.fastapi.flet_app import FletApp
    from flet_web.fastapi.flet_app_manager import FletAppManager
    from flet_web.fastapi.flet_fastapi import FastAPI

    os.environ.pop("FLET_RESILIENT_DISABLE", None)
    OWNERS = (FletApp, FletAppManager, FastAPI, Session, BaseControl, DiffBuilder,
              ServiceRegistry, object_patch, protocol, flet_app, base_control)
    SHIPPED = [dict(vars(owner)) for owner in OWNERS]
    ABSENT = object()

    def assert_flet_untouched():
        for owner, shipped in zip(OWNERS, SHIPPED):
            now = vars(owner)
            changed = sorted(name for name in shipped.keys() | now.keys()
                             if now.get(name, ABSENT) is not shipped.get(name, ABSENT))
            assert not changed, (owner, changed)

    def assert_owners_cover_the_seam():
        from flet_resilient import _flet
        from flet_resilient._flet import pagebuild
        replaced = {owner for owner, _ in _flet.PATCHED + pagebuild.SPED_UP}
        assert replaced <= set(OWNERS), replaced - set(OWNERS)
    """
)  # fmt: skip


def run(code: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True
    )


def test_import_flet_resilient_leaves_flet_untouched():
    done = run(UNTOUCHED + "import flet_resilient\nassert_flet_untouched()\n"
               "import flet_resilient.testing, flet_resilient.cluster\n"
               "assert_flet_untouched()\n")  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_uninstall_leaves_flets_classes_as_shipped():
    done = run(UNTOUCHED + textwrap.dedent(
        """
        import flet_resilient
        assert_owners_cover_the_seam()
        flet_resilient.install()
        try:
            assert_flet_untouched()
        except AssertionError:
            pass
        else:
            raise SystemExit("install() changed nothing")
        flet_resilient.uninstall()
        assert_flet_untouched()
        """
    ))  # fmt: skip
    assert done.returncode == 0, done.stderr + done.stdout


def test_the_first_decorator_installs_the_seam():
    done = run(UNTOUCHED + textwrap.dedent(
        """
        from flet_resilient import coalesce_updates
        coalesce_updates()(lambda page: None)
        try:
            assert_flet_untouched()
        except AssertionError:
            raise SystemExit(0)
        raise SystemExit("the decorator did not install the seam")
        """
    ))  # fmt: skip
    assert done.returncode == 0, done.stderr + done.stdout


def test_a_pytest_run_with_the_plugin_but_no_fixture_leaves_flet_untouched(tmp_path):
    (tmp_path / "test_users_own.py").write_text(
        UNTOUCHED + "\n\ndef test_flet_is_as_shipped():\n    assert_flet_untouched()\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    assert "flet_resilient" in done.stdout + _plugins(tmp_path)
    assert done.returncode == 0, done.stdout


def _plugins(cwd) -> str:
    """The plugins pytest loads here (ours must be among them)."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "--trace-config", "--co", "-q"],
        cwd=cwd, capture_output=True, text=True,
    ).stdout  # fmt: skip
