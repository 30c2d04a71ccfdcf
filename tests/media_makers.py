"""Real sticker-like files for tests, built from matplotlib's public-domain Grace Hopper photo."""
import struct
import zlib
from pathlib import Path

import numpy as np
from matplotlib import cbook
from PIL import Image, ImageDraw


def hopper(size=320):
    """A sticker card: the real face, large, on a plain background with a caption bar."""
    with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as im:
        face = im.convert("RGB").crop((90, 20, 430, 360)).resize((size - 40, size - 40))
    card = Image.new("RGB", (size, size), (240, 200, 80))
    card.paste(face, (20, 0))
    ImageDraw.Draw(card).rectangle((0, size - 40, size, size), fill=(20, 20, 20))
    return card


def blank(size=200, color=(90, 160, 200)):
    card = Image.new("RGB", (size, size), color)
    ImageDraw.Draw(card).rectangle((40, 70, 160, 130), outline=(255, 255, 255), width=6)
    return card


def save_gif(path, frames, durations):
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=durations, loop=0)
    return Path(path)


def face_gif(path, n=6):
    base = hopper()
    frames = [base.rotate(3 * (i - n // 2), fillcolor=(240, 200, 80)) for i in range(n)]
    return save_gif(path, frames, [80] * n)


def png_bytes(*chunks):
    """A PNG's bytes from its (kind, data) chunks, each given its length and CRC; IEND added."""
    return b"\x89PNG\r\n\x1a\n" + b"".join(
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        for kind, data in (*chunks, (b"IEND", b"")))


def png_header_only(path, width, height):
    """A PNG that declares width x height but holds almost no data: a decompression bomb's header."""
    Path(path).write_bytes(png_bytes((b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)),
                                     (b"IDAT", zlib.compress(b"\x00" * 64))))
    return Path(path)


def bomb_png(path, side=10000):
    """A real, valid PNG of side x side zeros: tiny on disk, huge once decoded."""
    rows = zlib.compressobj(9)
    data = b"".join(rows.compress(b"\x00" * (side + 1)) for _ in range(side)) + rows.flush()
    Path(path).write_bytes(png_bytes((b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)), (b"IDAT", data)))
    return Path(path)


def shaped(path, width, height):
    Image.fromarray(np.full((height, width, 3), 128, np.uint8)).save(path)
    return Path(path)


def face_mp4(path, seconds=2, fps=10):
    """A short clip (OpenCV's mp4v encoder) of the face card drifting across the frame."""
    import cv2
    card = cv2.cvtColor(np.asarray(hopper()), cv2.COLOR_RGB2BGR)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (480, 360))
    for i in range(seconds * fps):
        frame = np.full((360, 480, 3), 60, np.uint8)
        x = 20 + i * 6
        frame[20:340, x:x + 320] = card
        writer.write(frame)
    writer.release()
    return Path(path)


def _ebml(eid, payload):
    """A Matroska (EBML) element: its ID, its size as an 8-byte vint, its payload."""
    return eid + b"\x01" + len(payload).to_bytes(7, "big") + payload


def _ebml_uint(eid, value):
    return _ebml(eid, value.to_bytes(8, "big"))


def vfr_mkv(path, durations_ms, size=(96, 64)):
    """A Matroska clip of MJPEG frames shown for durations_ms each, as a phone or a screen recorder
    varies its rate (OpenCV writes only steady rates). Frame i is grey level 20 + 7 i (mod 256)."""
    import cv2
    header = _ebml(b"\x1a\x45\xdf\xa3", _ebml_uint(b"\x42\x86", 1) + _ebml(b"\x42\x82", b"matroska")
                   + _ebml_uint(b"\x42\x87", 2) + _ebml_uint(b"\x42\x85", 2))
    info = _ebml(b"\x15\x49\xa9\x66", _ebml_uint(b"\x2a\xd7\xb1", 1_000_000)  # time stamps in ms
                 + _ebml(b"\x44\x89", struct.pack(">d", sum(durations_ms))))
    video = _ebml(b"\xe0", _ebml_uint(b"\xb0", size[0]) + _ebml_uint(b"\xba", size[1]))
    track = _ebml(b"\xae", _ebml_uint(b"\xd7", 1) + _ebml_uint(b"\x73\xc5", 1) + _ebml_uint(b"\x83", 1)
                  + _ebml(b"\x86", b"V_MJPEG") + video)
    blocks, start = b"", 0
    for i, duration in enumerate(durations_ms):
        jpeg = cv2.imencode(".jpg", np.full((size[1], size[0], 3), (20 + 7 * i) % 256, np.uint8))[1].tobytes()
        blocks += _ebml(b"\xa3", b"\x81" + struct.pack(">hB", start, 0x80) + jpeg)  # track 1, keyframe
        start += duration
    cluster = _ebml(b"\x1f\x43\xb6\x75", _ebml_uint(b"\xe7", 0) + blocks)
    segment = _ebml(b"\x18\x53\x80\x67", info + _ebml(b"\x16\x54\xae\x6b", track) + cluster)
    Path(path).write_bytes(header + segment)
    return Path(path)
