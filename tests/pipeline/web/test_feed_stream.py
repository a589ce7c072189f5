"""The live feed with a real ``stream``: ``serve`` and ``stream`` run as separate processes on one SQLite database
(the friends gallery), ``stream`` reading the friends clip from a loopback RTSP server; the /feed page, open in a
headless Chromium, shows each track ``stream`` finishes within 2 s of the track's line on ``stream``'s stdout
(printed as the track ends, before its row is committed)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time

from tests.conftest import ROOT
from tests.live.conftest import rtsp_server, stream_clip  # noqa: F401 (fixtures)
from tests.live.rtsp import free_port, wait_port
from tests.live.test_stream_cli import CONFIG, app_config, gallery_db, log_rows  # noqa: F401 (fixtures)
from tests.pipeline.web.test_app import CHROMIUM_FLAGS, _browser_or_skip, csp_violations, log_in

TOKEN = "feed-stream-token-0123"
TRACK_LINE = re.compile(r"^(\d+:\d+) cam ")
LIMIT_S = 2.0

# records, in the page, when each event's item is added: data-ref -> Date.now() (ms since the epoch)
OBSERVE = """
window.seenAt = {};
new MutationObserver((changes) => {
  for (const c of changes)
    for (const n of c.addedNodes) if (n.dataset && n.dataset.ref) window.seenAt[n.dataset.ref] = Date.now();
}).observe(document.getElementById("events"), {childList: true});
"""


def _start(args: list[str], log, **kw) -> subprocess.Popen:
    env = os.environ | {"FACEMOE_API_TOKEN": TOKEN}
    return subprocess.Popen([sys.executable, "run_pipeline.py", *args], cwd=ROOT, env=env, stderr=log, **kw)


def _end(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def test_the_feed_shows_each_track_of_a_running_stream_within_2_s(
    rtsp_server,  # noqa: F811
    stream_clip,  # noqa: F811
    gallery_db,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    webdriver, browser, driver_path = _browser_or_skip()
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    monkeypatch.setenv("SE_OFFLINE", "true")  # never let Selenium fetch drivers or browsers
    rtsp_server.publish("cam", stream_clip)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    serve_log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 (closed below)
    stream_log = open(tmp_path / "stream.log", "w")  # noqa: SIM115 (closed below)
    serve = _start(["serve", "--db", gallery_db, "--config", str(CONFIG), "--port", str(port)], serve_log)
    stream = None
    chrome = None
    lines: list[tuple[str, float]] = []  # (ref, time.time() when stream printed its track line)
    try:
        wait_port(port, 60)
        options = webdriver.ChromeOptions()
        options.binary_location = browser
        for flag in CHROMIUM_FLAGS + (f"--user-data-dir={tmp_path / 'profile'}",):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        chrome = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
        chrome.set_page_load_timeout(30)
        log_in(chrome, base, TOKEN)
        chrome.get(f"{base}/feed")
        WebDriverWait(chrome, 20).until(lambda d: d.find_element(By.ID, "state").text == "live")
        chrome.execute_script(OBSERVE)

        live = tmp_path / "live.yaml"
        live.write_text("transport: udp\nread_timeout_s: 2\n")
        args = ["stream", rtsp_server.url("cam"), "--config", str(CONFIG), "--live-config", str(live)]
        stream = _start(
            [*args, "--db", gallery_db, "--duration", "12"], stream_log, stdout=subprocess.PIPE, text=True
        )

        def read() -> None:
            for line in stream.stdout:
                if m := TRACK_LINE.match(line):
                    lines.append((m.group(1), time.time()))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        assert stream.wait(120) == 0, (tmp_path / "stream.log").read_text()[-2000:]
        reader.join(10)
        time.sleep(LIMIT_S + 0.5)  # the last track's event has had its time to arrive
        seen = chrome.execute_script("return window.seenAt")
        items = chrome.find_elements(By.CSS_SELECTOR, "#events li")
        texts = {i.get_attribute("data-ref"): i.text for i in items}
        violations = csp_violations(chrome)
    finally:
        if chrome is not None:
            chrome.quit()
        if stream is not None:
            _end(stream)
        _end(serve)
        serve_log.close()
        stream_log.close()
    assert lines, "stream printed no track"
    assert len(log_rows(gallery_db)["tracks"]) == len(lines)  # every logged track had its line
    delays = {ref: round(seen[ref] / 1000 - at, 2) if ref in seen else None for ref, at in lines}
    late = {ref: d for ref, d in delays.items() if d is None or d > LIMIT_S}
    assert not late, f"tracks shown late (s after the track line) or never (None): {late}; all: {delays}"
    assert set(seen) == set(delays)  # no other event
    assert all("cam" in texts[ref] for ref, _ in lines)
    assert violations == []
