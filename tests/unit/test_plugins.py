"""install() loads the installed plugins of the ``toolkit.plugins`` entry-point group: each
receives the app, the settings, the toolkit's providers and stores; one switched off by
``plugins.disabled``, or whose framework is absent, does nothing with one log line; one that
raises fails the startup naming itself. The plugins are real distributions on ``sys.path``
(a module and its ``.dist-info`` with ``entry_points.txt``), found by importlib.metadata."""

from __future__ import annotations

import logging
import sys
import textwrap
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

import toolkit
from tests.support.asgi import lifespan
from toolkit import ConfigurationError, ToolkitSettings
from toolkit.plugins import PLUGIN_GROUP, PluginContext

pytestmark = pytest.mark.anyio


@dataclass
class FakeDistribution:
    """A plugin distribution installed for one test: ``name`` is its entry point's name."""

    name: str
    module: str

    def calls(self) -> list[Any]:
        return sys.modules[self.module].CALLS  # type: ignore[no-any-return]


@pytest.fixture
def install_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Writes a plugin distribution whose module body is ``code`` (it defines ``plugin``)."""

    def write(name: str, code: str, *, attribute: str = "plugin") -> FakeDistribution:
        module = f"toolkit_test_plugin_{uuid.uuid4().hex[:8]}"
        (tmp_path / f"{module}.py").write_text(
            "from toolkit.plugins import Plugin\nCALLS = []\n" + textwrap.dedent(code)
        )
        info = tmp_path / f"{module}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(f"[{PLUGIN_GROUP}]\n{name} = {module}:{attribute}\n")
        monkeypatch.syspath_prepend(str(tmp_path))
        monkeypatch.delitem(sys.modules, module, raising=False)
        return FakeDistribution(name, module)

    return write


RECORDING = """
def apply(context):
    CALLS.append(context)
    context.on_shutdown(lambda: CALLS.append("shutdown"))
plugin = Plugin(framework="json", apply=apply, versions=">=1")
"""


async def test_an_installed_plugin_receives_the_app_settings_providers_and_stores(
    install_plugin: Any,
) -> None:
    """One call, after every capability is set up, with the toolkit's own objects."""
    fake = install_plugin("recording", RECORDING)
    app = FastAPI()
    installed = toolkit.install(app, ToolkitSettings())
    [context] = fake.calls()
    assert isinstance(context, PluginContext)
    assert context.app is app
    assert context.settings is installed.settings
    assert context.tracer_provider is installed.telemetry.tracer_provider
    assert context.meter_provider is installed.telemetry.meter_provider
    assert context.backend is installed.backend
    assert context.flags is installed.flags
    assert context.cache is installed.cache
    assert context.breakers is installed.breakers
    assert "recording" in installed.plugins.plugins


async def test_a_plugins_shutdown_callbacks_run_when_the_app_stops(install_plugin: Any) -> None:
    fake = install_plugin("recording", RECORDING)
    app = FastAPI()
    toolkit.install(app, ToolkitSettings())
    async with lifespan(app):
        assert fake.calls()[1:] == []
    assert fake.calls()[1:] == ["shutdown"]


async def test_a_plugin_switched_off_by_the_setting_does_nothing_with_one_log_line(
    install_plugin: Any, caplog: pytest.LogCaptureFixture
) -> None:
    fake = install_plugin("recording", RECORDING)
    caplog.set_level(logging.INFO, "toolkit.plugins")
    installed = toolkit.install(FastAPI(), ToolkitSettings(plugins={"disabled": ["recording"]}))
    assert fake.module not in sys.modules  # not even imported
    assert "recording" not in installed.plugins.plugins
    lines = [r.getMessage() for r in caplog.records if "recording" in r.getMessage()]
    assert lines == ["toolkit plugin recording is switched off by plugins.disabled"]


async def test_a_plugin_whose_framework_is_absent_does_nothing_with_one_log_line(
    install_plugin: Any, caplog: pytest.LogCaptureFixture
) -> None:
    fake = install_plugin(
        "absent",
        """
        def apply(context):
            CALLS.append(context)
        plugin = Plugin(framework="no_such_framework_here", apply=apply)
        """,
    )
    caplog.set_level(logging.INFO, "toolkit.plugins")
    installed = toolkit.install(FastAPI(), ToolkitSettings())
    assert fake.calls() == []
    assert "absent" not in installed.plugins.plugins
    lines = [r.getMessage() for r in caplog.records if "absent" in r.getMessage()]
    assert lines == ["toolkit plugin absent does nothing: no_such_framework_here is not installed"]


async def test_a_disabled_name_that_no_plugin_has_fails_the_startup_naming_the_installed(
    install_plugin: Any,
) -> None:
    install_plugin("recording", RECORDING)
    with pytest.raises(ConfigurationError) as refused:
        toolkit.install(FastAPI(), ToolkitSettings(plugins={"disabled": ["recordnig"]}))
    assert "plugins.disabled names 'recordnig'" in str(refused.value)
    assert "'recording'" in str(refused.value)


@pytest.mark.parametrize("name", ["", "Pydantic AI", "pydantic/ai"])
def test_a_malformed_plugin_name_is_refused_naming_the_setting(name: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        ToolkitSettings(plugins={"disabled": [name]})
    assert "TOOLKIT_PLUGINS__DISABLED (entry 0)" in str(refused.value)
    assert "e.g. 'pydantic-ai'" in str(refused.value)


async def test_a_plugin_that_raises_while_loading_fails_the_startup_naming_it(
    install_plugin: Any,
) -> None:
    """Before the app is touched: no middleware was added."""
    install_plugin("broken", "raise RuntimeError('boom at import')\n")
    app = FastAPI()
    with pytest.raises(ConfigurationError) as refused:
        toolkit.install(app, ToolkitSettings())
    message = str(refused.value)
    assert "toolkit plugin 'broken'" in message
    assert "boom at import" in message
    assert "TOOLKIT_PLUGINS__DISABLED='[\"broken\"]'" in message
    assert app.user_middleware == []
    assert getattr(app.state, "toolkit", None) is None


async def test_a_plugin_that_raises_while_applying_fails_the_startup_naming_it(
    install_plugin: Any,
) -> None:
    install_plugin(
        "failing",
        """
        def apply(context):
            raise ValueError("no such agent")
        plugin = Plugin(framework="json", apply=apply)
        """,
    )
    with pytest.raises(ConfigurationError) as refused:
        toolkit.install(FastAPI(), ToolkitSettings())
    assert "toolkit plugin 'failing' failed to apply: no such agent" in str(refused.value)


async def test_an_entry_point_that_names_no_plugin_fails_the_startup_naming_it(
    install_plugin: Any,
) -> None:
    install_plugin("odd", "something = 42\n", attribute="something")
    with pytest.raises(ConfigurationError) as refused:
        toolkit.install(FastAPI(), ToolkitSettings())
    assert "toolkit plugin 'odd'" in str(refused.value)
    assert "not a toolkit.plugins.Plugin" in str(refused.value)


async def test_a_failing_shutdown_callback_is_logged_and_the_shutdown_goes_on(
    install_plugin: Any, caplog: pytest.LogCaptureFixture
) -> None:
    fake = install_plugin(
        "twice",
        """
        async def closing():
            CALLS.append("closed")
        def failing():
            raise RuntimeError("cannot close")
        def apply(context):
            context.on_shutdown(closing)
            context.on_shutdown(failing)
        plugin = Plugin(framework="json", apply=apply)
        """,
    )
    app = FastAPI()
    installed = toolkit.install(app, ToolkitSettings())
    async with lifespan(app):
        pass
    assert fake.calls() == ["closed"]
    assert "cannot close" in caplog.text
    await installed.plugins.shutdown()  # again: nothing left to run
    assert fake.calls() == ["closed"]
