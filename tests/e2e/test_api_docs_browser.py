"""Issue 7: the API docs work offline, in a real browser, on both APIs.

Each API runs as its console script; headless Chromium from Debian's ``chromium`` package
(driven by Playwright, whose own browser downloads are not used) opens ``/docs`` and
``/redoc``. Every operation must render, every request the pages make must stay on the
loopback interface, and a screenshot of ``/docs`` is saved into ``docs/``. A missing
Chromium fails the test: CI installs it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    Locator,
    Page,
    Request,
    Response,
    ViewportSize,
    expect,
    sync_playwright,
)

from runtime.settings import Settings
from tests.conftest import Spawn
from tests.support.processes import ROOT, free_port, wait_http_ok

CHROMIUM_PACKAGE = "chromium"  # Debian's package; provides /usr/bin/chromium
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
# Requests that never reach a network: inline data and objects the page made itself.
LOCAL_SCHEMES = {"data", "blob", "about"}
NETWORK_SCHEMES = {"http", "https", "ws", "wss"}
VIEWPORT: ViewportSize = {"width": 1280, "height": 900}
RENDER_TIMEOUT_MS = 30_000


def _chromium_executable() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path is not None, (
        f"Chromium is not installed: apt-get install -y {CHROMIUM_PACKAGE} "
        "(this test never downloads Playwright's browsers)"
    )
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's headless Chromium, driven by Playwright."""
    executable = _chromium_executable()
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, headless=True)
        yield chromium
        chromium.close()


@dataclass
class Traffic:
    """Everything a page asked for, and what went wrong with it."""

    urls: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def record(self, page: Page) -> None:
        """Listen to every request of ``page``'s context (workers included)."""
        page.context.on("request", lambda request: self.urls.append(request.url))
        page.context.on("requestfailed", self._failed)
        page.context.on("response", self._answered)

    def _failed(self, request: Request) -> None:
        self.failures.append(f"{request.url}: {request.failure}")

    def _answered(self, response: Response) -> None:
        if response.status >= 400:
            self.failures.append(f"{response.url}: HTTP {response.status}")

    def off_loopback(self) -> list[str]:
        """The requests that would have left this machine."""
        leaving = []
        for url in self.urls:
            parts = urlsplit(url)
            if parts.scheme in LOCAL_SCHEMES:
                continue
            if parts.scheme not in NETWORK_SCHEMES or parts.hostname not in LOOPBACK_HOSTS:
                leaving.append(url)
        return leaving


@dataclass(frozen=True)
class RunningApi:
    """One API process and the OpenAPI document it serves."""

    name: str
    url: str
    openapi: dict[str, Any]

    @property
    def operations(self) -> dict[str, dict[str, Any]]:
        """Each documented operation, by its operationId."""
        return {
            operation["operationId"]: operation
            for item in self.openapi["paths"].values()
            for operation in item.values()
        }


API_PROCESSES = {
    "command": ("command-api", "command_api_port"),
    "query": ("query-api", "query_api_port"),
}


@pytest.fixture(params=sorted(API_PROCESSES))
def api(request: pytest.FixtureRequest, spawn: Spawn) -> RunningApi:
    """One API started as a real process on a free port; nothing else is needed for docs."""
    name: str = request.param
    command, port_setting = API_PROCESSES[name]
    settings = Settings().model_copy(update={port_setting: free_port()})
    process = spawn(command, settings)
    url = f"http://{settings.http_host}:{getattr(settings, port_setting)}"
    wait_http_ok(f"{url}/docs", 30, process)
    openapi: dict[str, Any] = httpx.get(f"{url}/openapi.json", timeout=5).json()
    return RunningApi(name, url, openapi)


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh page in its own context, 1280×900."""
    context = browser.new_context(viewport=VIEWPORT)
    yield context.new_page()
    context.close()


def test_swagger_ui_renders_every_operation_with_its_examples_from_loopback_only(
    api: RunningApi, page: Page
) -> None:
    traffic = Traffic()
    traffic.record(page)

    page.goto(f"{api.url}/docs")
    ids = page.locator(".opblock-summary-operation-id")
    _wait_until_rendered(ids, len(api.operations), traffic)
    assert sorted(ids.all_inner_texts()) == sorted(api.operations)
    for operation_id, operation in api.operations.items():
        _expand(page, operation_id)
        _assert_examples_shown(page, operation_id, operation)
    _collapse_all_but_the_main_operation(page, api)
    page.screenshot(path=ROOT / "docs" / f"api-docs-{api.name}.png")

    assert api.operations
    assert traffic.off_loopback() == []
    assert traffic.failures == []
    assert any(urlsplit(u).path.startswith("/_static/swagger-ui/") for u in traffic.urls)


def test_redoc_renders_every_operation_from_loopback_only(api: RunningApi, page: Page) -> None:
    traffic = Traffic()
    traffic.record(page)

    page.goto(f"{api.url}/redoc")
    for operation_id in api.operations:
        section = page.locator(f'[data-section-id="operation/{operation_id}"]')
        _wait_until_rendered(section, 1, traffic)
    rendered = page.eval_on_selector_all(
        "[data-section-id^='operation/']",
        "sections => sections.map(s => s.getAttribute('data-section-id'))",
    )

    assert sorted(rendered) == sorted(f"operation/{o}" for o in api.operations)
    assert page.get_by_text("Response samples").count() == len(api.operations)
    assert traffic.off_loopback() == []
    assert traffic.failures == []
    assert any(urlsplit(u).path == "/_static/redoc/redoc.standalone.js" for u in traffic.urls)


def test_the_loopback_check_catches_a_request_to_a_cdn() -> None:
    traffic = Traffic(
        urls=[
            "http://127.0.0.1:8000/docs",
            "http://localhost:8000/openapi.json",
            "blob:http://127.0.0.1:8000/3570c28c",
            "data:image/png;base64,AAAA",
            "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css",
            "https://fonts.googleapis.com/css?family=Montserrat",
        ]
    )

    assert traffic.off_loopback() == [
        "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css",
        "https://fonts.googleapis.com/css?family=Montserrat",
    ]


def _wait_until_rendered(locator: Locator, count: int, traffic: Traffic) -> None:
    """Wait for ``count`` matches; a page that never renders fails with its failed requests."""
    try:
        expect(locator).to_have_count(count, timeout=RENDER_TIMEOUT_MS)
    except AssertionError as error:
        raise AssertionError(f"{error}\nfailed requests: {traffic.failures}") from error


def _operation_block(page: Page, operation_id: str) -> Locator:
    return page.locator(".opblock").filter(
        has=page.locator(".opblock-summary-operation-id", has_text=operation_id)
    )


def _expand(page: Page, operation_id: str) -> None:
    block = _operation_block(page, operation_id)
    if block.locator(".opblock-body").count() == 0:
        block.locator(".opblock-summary-control").click()
    expect(block.locator(".responses-table").first).to_be_visible()


def _assert_examples_shown(page: Page, operation_id: str, operation: dict[str, Any]) -> None:
    """The request body and every documented response show an example, not a blank."""
    block = _operation_block(page, operation_id)
    if "requestBody" in operation:
        body = block.locator(".opblock-section-request-body .microlight").first
        expect(body).to_be_visible()
        _assert_json(body.inner_text(), f"{operation_id} request body")
    for code, response in operation["responses"].items():
        if not response.get("content"):
            continue
        example = block.locator(f'.response[data-code="{code}"] .microlight').first
        expect(example).to_be_visible()
        shown = _assert_json(example.inner_text(), f"{operation_id} {code}")
        if "application/problem+json" in response["content"]:
            assert shown["status"] == int(code), f"{operation_id} {code}: {shown}"


def _assert_json(text: str, what: str) -> Any:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise AssertionError(f"{what}: the example shown is not JSON: {text!r}") from error
    assert value, f"{what}: the example shown is empty"
    return value


def _collapse_all_but_the_main_operation(page: Page, api: RunningApi) -> None:
    """The screenshot shows the API's own operation open, its health check closed."""
    for operation_id in api.operations:
        if operation_id.endswith("Health"):
            _operation_block(page, operation_id).locator(".opblock-summary-control").click()
    page.evaluate("document.activeElement?.blur(); window.scrollTo(0, 0)")
