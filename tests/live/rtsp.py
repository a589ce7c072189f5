"""A loopback RTSP server (the RTSP::Server library of Debian's rtsp-server-perl) and ffmpeg publishers
streaming a clip to it, for tests.

The server relays what a publisher ANNOUNCEs on its source port to players on its client port, over RTP/UDP.
Everything binds to 127.0.0.1; every wait here is bounded.
"""

from __future__ import annotations

import queue
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
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-i",
            str(src),
            "-t",
            str(seconds),
            "-vf",
            f"scale={width}:-2",
            "-an",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-g",
            "12",
            "-bf",
            "0",
            "-x264-params",
            "repeat-headers=1",
            str(dst),
        ],
        check=True,
        timeout=120,
    )
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
                [
                    "perl",
                    "-e",
                    SERVER_SCRIPT,
                    str(self.client_port),
                    str(self.source_port),
                    str(self.rtp_port),
                ],
                stdout=log,
                stderr=log,
            )
        wait_port(self.client_port, 10)
        wait_port(self.source_port, 10)
        return self

    def publish(self, mount: str, clip: Path, loop: bool = True) -> subprocess.Popen:
        """Stream ``clip`` in real time to ``mount`` (looped), waiting until players can attach."""
        cmd = (
            ["ffmpeg", "-v", "error", "-re"]
            + (["-stream_loop", "-1"] if loop else [])
            + ["-i", str(clip), "-c", "copy", "-f", "rtsp", f"rtsp://127.0.0.1:{self.source_port}/{mount}"]
        )
        with open(self.log_dir / f"publish-{mount}-{self.client_port}.log", "ab") as log:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        self.publishers[mount] = proc
        deadline = time.monotonic() + 15
        while not self.mounted(mount):  # the ANNOUNCE/RECORD handshake is done when players can DESCRIBE
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"publisher for {mount} not streaming (exit code {proc.poll()}), see {self.log_dir}"
                )
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


class _Player:
    """A playing client of ``InterleavedRtspServer``: its packets are queued and sent by a thread of its own, so a
    slow player delays only itself (TCP back-pressure) and the relay never drops what the publisher sends."""

    def __init__(self, conn: socket.socket, lock: threading.Lock, mount: str) -> None:
        self.conn, self.lock, self.mount = conn, lock, mount
        self.packets: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._send, daemon=True)

    def _send(self) -> None:
        while (packet := self.packets.get()) is not None:
            try:
                with self.lock:
                    self.conn.sendall(packet)
            except OSError:
                return

    def stop(self) -> None:
        self.packets.put(None)


class InterleavedRtspServer:
    """A minimal RTSP server on loopback that only speaks RTP interleaved in the RTSP TCP connection
    (``RTP/AVP/TCP``; a UDP ``SETUP`` is answered 461 Unsupported Transport).

    ``publish`` starts an ffmpeg sending a clip as plain RTP to a local UDP port; the server relays each RTP
    (channel 0) and RTCP (channel 1) packet to every client playing that mount, framed ``$ channel length``. With
    ``loop=False`` the clip plays once and the packets sent before the first player's PLAY are kept for it: that
    player gets every frame of the clip, from the first, whenever it attaches (over TCP, none lost). ``drop``
    closes the listener and every client connection at once (a crash as the players see it) while the publisher
    goes on; ``start`` listens again on the same port.
    """

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.log_dir = log_dir
        self.sessions = 0  # PLAYs served
        self.refused_udp = 0  # SETUPs refused for asking UDP
        self._clients: list[_Player] = []
        self._lock = threading.Lock()
        self._sdp: dict[str, str] = {}
        self._held: dict[str, list[bytes]] = {}  # mount played once -> packets sent before its first PLAY
        self._publishers: dict[str, subprocess.Popen] = {}
        self._relays: list[socket.socket] = []
        self._listener: socket.socket | None = None

    def url(self, mount: str) -> str:
        return f"rtsp://127.0.0.1:{self.port}/{mount}"

    def start(self) -> InterleavedRtspServer:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(16)
        self._listener = sock
        threading.Thread(target=self._accept, args=(sock,), daemon=True).start()
        return self

    def publish(self, mount: str, clip: Path, loop: bool = True) -> subprocess.Popen:
        """Stream ``clip`` in real time (looped, or once) as RTP to a relay socket; returns when its SDP is
        known."""
        rtp, rtcp = (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM),
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM),
        )
        for sock in (rtp, rtcp):
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(0.5)
            self._relays.append(sock)
        sdp = self.log_dir / f"interleaved-{mount}-{self.port}.sdp"
        sdp.unlink(missing_ok=True)
        cmd = [
            "ffmpeg",
            "-v",
            "error",
            "-re",
            *(["-stream_loop", "-1"] if loop else []),
            "-i",
            str(clip),
            "-c",
            "copy",
            "-f",
            "rtp",
            "-sdp_file",
            str(sdp),
            f"rtp://127.0.0.1:{rtp.getsockname()[1]}?rtcpport={rtcp.getsockname()[1]}",
        ]
        if not loop:
            with self._lock:
                self._held[mount] = []
        with open(self.log_dir / f"publish-{mount}-{self.port}.log", "ab") as log:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        self._publishers[mount] = proc
        for channel, sock in ((0, rtp), (1, rtcp)):
            threading.Thread(target=self._relay, args=(sock, channel, mount), daemon=True).start()
        deadline = time.monotonic() + 15
        while not (sdp.is_file() and "a=rtpmap" in sdp.read_text()):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"RTP publisher for {mount} not streaming (exit code {proc.poll()})")
            time.sleep(0.05)
        media = []
        for line in sdp.read_text().splitlines():
            if line.startswith("c="):
                line = "c=IN IP4 0.0.0.0"
            if line.startswith("m=video"):
                line = "m=video 0 RTP/AVP " + line.split()[-1]
            media.append(line)
            if line.startswith("m=video"):
                media.append("a=control:trackID=0")
        self._sdp[mount] = "\r\n".join(media) + "\r\n"
        return proc

    def drop(self) -> None:
        """Close the listener and every client connection."""
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept, frees the port
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.stop()
            try:
                client.conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            client.conn.close()

    def close(self) -> None:
        self.drop()
        for proc in self._publishers.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        self._publishers.clear()
        for sock in self._relays:
            sock.close()
        self._relays.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # closed by drop
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _relay(self, sock: socket.socket, channel: int, mount: str) -> None:
        while True:
            try:
                packet = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            frame = b"$" + bytes([channel]) + len(packet).to_bytes(2, "big") + packet
            with self._lock:
                if mount in self._held:  # played once, nobody playing yet: kept for the first player
                    self._held[mount].append(frame)
                    continue
                for client in self._clients:
                    if client.mount == mount:
                        client.packets.put(frame)

    def _play(self, conn: socket.socket, lock: threading.Lock, mount: str) -> _Player:
        """A player of ``mount`` from now on; the first player of a mount played once gets its held packets."""
        client = _Player(conn, lock, mount)
        with self._lock:  # the relays wait: the held packets go first, in order
            for frame in self._held.pop(mount, []):
                client.packets.put(frame)
            self._clients.append(client)
        client.thread.start()
        return client

    def _serve(self, conn: socket.socket) -> None:
        lock = threading.Lock()
        player: _Player | None = None
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    if buf.startswith(b"$") and len(buf) >= 4:  # interleaved RTCP from the player: skip it
                        size = 4 + int.from_bytes(buf[2:4], "big")
                        if len(buf) < size:
                            break
                        buf = buf[size:]
                        continue
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                if b"\r\n\r\n" not in buf:
                    continue
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
                body_len = int(headers.get("content-length", 0))
                while len(buf) < body_len:
                    buf += conn.recv(65536)
                buf = buf[body_len:]
                method, target = lines[0].split()[:2]
                status, extra, body = self._answer(method, target, headers)
                reply = [
                    f"RTSP/1.0 {status}",
                    f"CSeq: {headers.get('cseq', '0')}",
                    *extra,
                    f"Content-Length: {len(body)}",
                ]
                with lock:
                    conn.sendall(("\r\n".join(reply) + "\r\n\r\n" + body).encode("latin-1"))
                if method == "PLAY" and status.startswith("200") and player is None:
                    self.sessions += 1
                    player = self._play(conn, lock, self._mount(target))
                if method == "TEARDOWN":
                    return
        except OSError:
            return
        finally:
            if player is not None:
                player.stop()
                with self._lock:
                    if player in self._clients:
                        self._clients.remove(player)
            conn.close()

    def _mount(self, target: str) -> str:
        return target.split(f":{self.port}/", 1)[-1].split("/", 1)[0]

    def _answer(self, method: str, target: str, headers: dict[str, str]) -> tuple[str, list[str], str]:
        mount = self._mount(target)
        if method == "OPTIONS":
            return "200 OK", ["Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER"], ""
        if mount not in self._sdp:
            return "404 Not Found", [], ""
        session = ["Session: 4242;timeout=60"]
        if method == "DESCRIBE":
            return (
                "200 OK",
                [f"Content-Base: {self.url(mount)}/", "Content-Type: application/sdp"],
                self._sdp[mount],
            )
        if method == "SETUP":
            if "TCP" not in headers.get("transport", "").upper():
                self.refused_udp += 1
                return "461 Unsupported Transport", [], ""
            return "200 OK", ["Transport: RTP/AVP/TCP;unicast;interleaved=0-1", *session], ""
        if method in ("PLAY", "GET_PARAMETER", "TEARDOWN"):
            return "200 OK", session, ""
        return "405 Method Not Allowed", [], ""
