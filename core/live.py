"""Live encoding settings and the RTMP session, shared by the idle-loop cache and the publisher.

Every H.264 encoder of the live path is made here with the same options, so packets from the
pre-encoded idle loop and from live encoding decode as one stream (identical SPS/PPS) and can be
interleaved at keyframes inside one RTMP session.
"""

from __future__ import annotations

import hashlib
import json
from fractions import Fraction

import av
import numpy as np

from avatars.yuv import SWS_THREADS
from core.settings import Settings

FPS = 25
GOP = 2 * FPS
VIDEO_TB = Fraction(1, FPS)


def video_options(settings: Settings) -> dict[str, str]:
    return {
        "preset": settings.live_preset, "tune": "zerolatency", "crf": str(settings.live_crf),
        "g": str(GOP), "keyint_min": str(GOP), "sc_threshold": "0", "bf": "0",
        # Cap bursts so a keyframe does not stall low-latency players.
        "x264-params": "vbv-maxrate=3000:vbv-bufsize=3000:repeat-headers=0",
    }


def options_digest(settings: Settings, width: int, height: int) -> str:
    blob = json.dumps([video_options(settings), width, height, FPS, av.__version__], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def configure_video(ctx, settings: Settings, width: int, height: int) -> None:
    ctx.width, ctx.height = width, height
    ctx.pix_fmt = "yuv420p"
    ctx.time_base = VIDEO_TB
    ctx.framerate = FPS
    ctx.options = video_options(settings)
    # Parameter sets live in the stream header (FLV/MP4 style), never repeated in-band.
    ctx.flags |= av.codec.context.Flags.global_header


def new_video_encoder(settings: Settings, width: int, height: int):
    ctx = av.CodecContext.create("libx264", "w")
    configure_video(ctx, settings, width, height)
    ctx.open()
    return ctx


def to_video_frame(bgr: np.ndarray | av.VideoFrame, pts: int, keyframe: bool = False) -> av.VideoFrame:
    """A BGR array converted, or a yuv420p frame already in the encoder's format taken as it is."""
    frame = bgr if isinstance(bgr, av.VideoFrame) else av.VideoFrame.from_ndarray(bgr, format="bgr24").reformat(
        format="yuv420p", threads=SWS_THREADS)
    frame.pts = pts
    frame.time_base = VIDEO_TB
    if keyframe:
        frame.pict_type = av.video.frame.PictureType.I
    return frame


class RtmpSession:
    """One publish connection: an FLV muxer with a live H.264 encoder and an AAC encoder.

    Timestamps come from counters, not the wall clock: video frame F has pts F (1/25 s) and the
    audio has exactly 1764 samples per video frame at 44.1 kHz, so audio and video cannot drift."""

    def __init__(self, url: str, settings: Settings, width: int, height: int, timeout_s: float = 5.0) -> None:
        self.rate = settings.live_audio_rate
        self.container = av.open(url, mode="w", format="flv", timeout=timeout_s)
        try:
            self.video = self.container.add_stream("libx264", rate=FPS)
            configure_video(self.video.codec_context, settings, width, height)
            self.video.codec_context.open()
            self.audio = self.container.add_stream("aac", rate=self.rate)
            self.audio.codec_context.layout = "mono"
            self.audio.codec_context.bit_rate = 96000
            # Half the CPU of the default coder (0.24 against 0.47 ms per video frame's audio), and
            # on speech no worse: real-talk-2 at 96 kbit/s decodes at SNR 34.0 dB, log-spectral
            # distance 3.0 dB, against 31.7 / 3.3 with the default.
            self.audio.codec_context.options = {"aac_coder": "fast"}
            self.audio.codec_context.open()
        except Exception:
            self.container.close()
            raise
        self.audio_pts = 0
        self._pcm = np.zeros(0, np.float32)
        self._frame_size = self.audio.codec_context.frame_size or 1024

    def encode_video(self, bgr: np.ndarray | av.VideoFrame, pts: int, keyframe: bool = False) -> None:
        for packet in self.video.encode(to_video_frame(bgr, pts, keyframe)):
            self.container.mux(packet)

    def mux_video_packet(self, data: bytes, pts: int, keyframe: bool) -> None:
        packet = av.Packet(data)
        packet.stream = self.video
        packet.time_base = VIDEO_TB
        packet.pts = packet.dts = pts
        packet.is_keyframe = keyframe
        self.container.mux(packet)

    def push_audio(self, pcm: np.ndarray) -> None:
        """Queue mono float32 PCM at the session rate and encode every full AAC frame."""
        self._pcm = np.concatenate([self._pcm, pcm.astype(np.float32)])
        n = self._frame_size
        while self._pcm.size >= n:
            chunk, self._pcm = self._pcm[:n], self._pcm[n:]
            frame = av.AudioFrame.from_ndarray(chunk[None, :], format="flt", layout="mono")
            frame.sample_rate = self.rate
            frame.pts = self.audio_pts
            frame.time_base = Fraction(1, self.rate)
            self.audio_pts += n
            for packet in self.audio.encode(frame):
                self.container.mux(packet)

    def close(self) -> None:
        try:
            for packet in self.video.encode(None):
                self.container.mux(packet)
            for packet in self.audio.encode(None):
                self.container.mux(packet)
        except Exception:  # the peer may already be gone; closing must still release the socket
            pass
        finally:
            try:
                self.container.close()
            except Exception:
                pass
