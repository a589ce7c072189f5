"""Fixtures of the live tests: a streaming clip cut from the shared friends video and a loopback RTSP server."""

from __future__ import annotations

import pytest

from tests.conftest import ASSETS, require
from tests.live.rtsp import InterleavedRtspServer, RtspServer, SilentServer, make_clip, tools_missing

FRIENDS = ASSETS / "videos" / "friends_in_video.mp4"


@pytest.fixture(scope="session")
def stream_clip(tmp_path_factory):
    """Six seconds of the friends clip at 640 px wide, encoded for streaming."""
    reason = tools_missing()
    if reason:
        pytest.skip(reason)
    return make_clip(require(FRIENDS), tmp_path_factory.mktemp("clip") / "friends_640.mp4")


@pytest.fixture
def rtsp_server(tmp_path, stream_clip):
    server = RtspServer(tmp_path).start()
    yield server
    server.kill()


@pytest.fixture
def silent_server():
    server = SilentServer()
    yield server
    server.close()


@pytest.fixture
def tcp_rtsp_server(tmp_path, stream_clip):
    """An RTSP server that serves RTP interleaved over TCP only."""
    server = InterleavedRtspServer(tmp_path).start()
    yield server
    server.close()
