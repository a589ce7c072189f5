"""A loopback RTSP server (the RTSP::Server library of Debian's rtsp-server-perl) and ffmpeg publishers streaming a clip to it, for tests.

The server relays what a publisher ANNOUNCEs on its source port to players on its client port, over RTP/UDP.
Everything binds to 127.0.0.1; every wait here is bounded.
"""
from __future__ import annotations

import random
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

SERVER = "rtsp-server-perl"
# The packaged script, with the RTP port base set: the library resets it to a global default (20000) whenever
# no stream is mounted, so two servers on one machine would fight over it.
SERVER_SCRIPT = """
use AnyEvent; use RTSP::Server;
my ($client, $source, $rtp) = @ARGV;
$RTSP::Server::RTP_START_PORT = $rtp;
my $srv = RTSP::Server->new(client_listen_port => $client, source_listen_port => $source, rtp_start_port => $rtp,
    client_listen_address => '127.0.0.1', source_listen_address => '127.0.0.1', log_level => 1);
$srv->listen;
AnyEvent->condvar->recv;
"""


def tools_missing() -> str | None:
    """Why the RTSP fixture cannot run here (see scripts/system-deps.sh), or None."""
    missing = [t for t in ("ffmpeg", SERVER) if shutil.which(t) is None]
    return f"missing system tools {missing} (run scripts/system-deps.sh)" if missing else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def make_clip(src: Path, dst: Path, seconds: float = 6.0, width: int = 640) -> Path:
    """Re-encode a stretch of ``src`` for streaming: H.264 with SPS/PPS before every keyframe, no B-frames."""
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(src), "-t", str(seconds), "-vf", f"scale={width}:-2",
                    "-an", "-c:v", "libx264", "-preset", "veryfast", "-g", "12", "-bf", "0",
                    "-x264-params", "repeat-headers=1", str(dst)], check=True, timeout=120)
    return dst


class RtspServer:
    """rtsp-server-perl on loopback ports; ``publish`` starts an ffmpeg streaming a clip to a mount."""

    def __init__(self, log_dir: Path) -> None:
        self.client_port = free_port()
        self.source_port = free_port()
        self.rtp_port = random.Random().randrange(20000, 60000, 256)  # a slot of its own for RTP/RTCP
        self.log_dir = log_dir
        self.proc: subprocess.Popen | None = None
        self.publishers: dict[str, subprocess.Popen] = {}

    def url(self, mount: str) -> str:
        return f"rtsp://127.0.0.1:{self.client_port}/{mount}"

    def start(self) -> RtspServer:
        with open(self.log_dir / f"rtsp-server-{self.client_port}.log", "ab") as log:
            self.proc = subprocess.Popen(
                ["perl", "-e", SERVER_SCRIPT, str(self.client_port), str(self.source_port), str(self.rtp_port)],
                stdout=log, stderr=log)
        wait_port(self.client_port, 10)
        wait_port(self.source_port, 10)
        return self

    def publish(self, mount: str, clip: Path, loop: bool = True) -> subprocess.Popen:
        """Stream ``clip`` in real time to ``mount`` (looped), waiting until players can attach."""
        cmd = ["ffmpeg", "-v", "error", "-re"] + (["-stream_loop", "-1"] if loop else []) + [
            "-i", str(clip), "-c", "copy", "-f", "rtsp", f"rtsp://127.0.0.1:{self.source_port}/{mount}"]
        with open(self.log_dir / f"publish-{mount}-{self.client_port}.log", "ab") as log:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        self.publishers[mount] = proc
        deadline = time.monotonic() + 15
        while not self.mounted(mount):  # the ANNOUNCE/RECORD handshake is done when players can DESCRIBE
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"publisher for {mount} not streaming (exit code {proc.poll()}), see "
                                   f"{self.log_dir}")
            time.sleep(0.1)
        return proc

    def mounted(self, mount: str) -> bool:
        """True when the server answers a DESCRIBE of ``mount`` with 200 OK."""
        request = f"DESCRIBE {self.url(mount)} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n\r\n"
        try:
            with socket.create_connection(("127.0.0.1", self.client_port), timeout=2) as s:
                s.sendall(request.encode())
                return s.recv(64).startswith(b"RTSP/1.0 200")
        except OSError:
            return False

    def stall(self, mount: str) -> None:
        self.publishers[mount].send_signal(signal.SIGSTOP)

    def resume(self, mount: str) -> None:
        self.publishers[mount].send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """Kill the server and its publishers at once (as a crash would)."""
        for proc in [*self.publishers.values(), self.proc]:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
                proc.wait(timeout=10)
        self.publishers.clear()
        self.proc = None


class SilentServer:
    """A TCP listener on loopback that accepts connections and never answers (a camera that hangs)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for conn in self.accepted:
            conn.close()
        self.sock.close()
