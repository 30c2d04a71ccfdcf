"""Files for the hardening tests and bench/fuzz_long.py: small valid seeds of every format the
reader takes, mutations of them, hand-built files that lie in their headers, and a plain folder
of stickers for the kill and concurrency tests.

Mutations are plain data (a list of (op, position, value) tuples), so hypothesis can draw and
shrink them and a random.Random can draw them the same way for the long run.
"""
import io
import os
import struct
import tempfile
import zlib
from functools import lru_cache

from PIL import Image

from media_makers import blank, face_gif, face_mp4, hopper, png_bytes

OPS = ("flip", "byte", "truncate", "zero", "repeat", "insert", "u16", "u32")
INTERESTING = (0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFF, 0x8000, 0x7FFFFFFF, 0xFFFFFFFF, 65535 * 3)


def _frames(n, size=48, face=False):
    base = hopper(160).resize((size, size)) if face else Image.new("RGB", (size, size), (200, 80, 40))
    return [base.rotate(9 * i, fillcolor=(255 - 30 * i, 40 * i % 255, 90)) for i in range(n)]


def _save(frames, fmt, **kw):
    buf = io.BytesIO()
    if len(frames) > 1:
        kw.update(save_all=True, append_images=frames[1:])
    frames[0].save(buf, fmt, **kw)
    return buf.getvalue()


def _mp4():
    with tempfile.TemporaryDirectory() as tmp:
        return face_mp4(os.path.join(tmp, "clip.mp4"), seconds=1).read_bytes()


@lru_cache(maxsize=None)
def seeds():
    """name -> (suffix, bytes): small, valid, and varied enough to reach each decoder's corners."""
    face = _frames(4, 96, face=True)
    rgba = [f.convert("RGBA") for f in _frames(3)]
    for f in rgba:
        f.putpixel((0, 0), (0, 0, 0, 0))
    return {
        "gif": (".gif", _save(_frames(5), "GIF", duration=[0, 10, 40, 2000, 70], loop=0, disposal=2)),
        "gif_face": (".gif", _save(face, "GIF", duration=80, loop=0)),
        "gif_transparent": (".gif", _save(rgba, "GIF", duration=50, transparency=0, disposal=3)),
        "webp_anim": (".webp", _save(_frames(4), "WEBP", duration=[0, 30, 500, 60], lossless=True)),
        "webp_face": (".webp", _save(face, "WEBP", duration=90, quality=60)),
        "webp_still": (".webp", _save(rgba[:1], "WEBP", quality=50)),
        "avif_face": (".avif", _save(face, "AVIF", duration=[40, 0, 300, 90], quality=50, speed=10)),
        "avif_still": (".avif", _save(rgba[:1], "AVIF", quality=40, speed=10)),
        "png": (".png", _save(face[:1], "PNG")),
        "png_palette": (".png", _save([f.quantize(16) for f in _frames(1)], "PNG", transparency=0)),
        "apng": (".png", _save(rgba, "PNG", duration=[0, 100, 30], disposal=1, blend=1)),
        "jpeg": (".jpg", _save(face[:1], "JPEG", quality=70)),
        "jpeg_progressive": (".jpg", _save(face[:1], "JPEG", quality=50, progressive=True)),
        "bmp": (".bmp", _save(_frames(1, 32), "BMP")),
        "mp4": (".mp4", _mp4()),
    }


def mutate(data, ops):
    """Apply (op, position, value) edits; positions wrap around the data's length."""
    data = bytearray(data)
    for op, pos, value in ops:
        if not data:
            break
        at = pos % len(data)
        if op == "flip":
            data[at] ^= 1 << (value % 8)
        elif op == "byte":
            data[at] = value % 256
        elif op == "truncate":
            del data[max(1, at):]
        elif op == "zero":
            data[at:at + 1 + value % 64] = bytes(len(data[at:at + 1 + value % 64]))
        elif op == "repeat":  # a chunk or frame appearing twice
            data[at:at] = data[at:at + 1 + value * 7 % 4096]
        elif op == "insert":
            data[at:at] = bytes((value * 31 + i) % 256 for i in range(1 + value % 32))
        elif op == "u16":
            data[at:at + 2] = struct.pack("<H", INTERESTING[value % len(INTERESTING)] & 0xFFFF)
        elif op == "u32":
            data[at:at + 4] = struct.pack(">I", INTERESTING[value % len(INTERESTING)] & 0xFFFFFFFF)
    return bytes(data)


def fix_png_crcs(data):
    """Recompute every PNG chunk CRC, so a mutation reaches the decoder instead of the CRC check."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return data
    out, at = bytearray(data[:8]), 8
    while at + 8 <= len(data):
        length = struct.unpack(">I", data[at:at + 4])[0]
        end = at + 8 + length
        if end + 4 > len(data):
            out += data[at:]
            break
        out += data[at:end] + struct.pack(">I", zlib.crc32(data[at + 4:end]))
        at = end + 4
    return bytes(out)


# Hand-built files whose headers lie.

def gif(screen, frames, palette_bits=1, global_palette=True, loop=True):
    """A GIF from frame tuples (x, y, w, h, delay_cs, transparent_index or None, local_bits or 0).
    Every frame is one palette index repeated, LZW-coded with a clear code every two pixels so
    the code size never grows."""
    out = bytearray(b"GIF89a" + struct.pack("<HH", *screen))
    out += bytes([(0x80 | (palette_bits - 1)) if global_palette else 0, 0, 0])
    if global_palette:
        out += bytes(j % 256 for j in range(3 * 2 ** palette_bits))
    if loop:
        out += b"!\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"
    for i, (x, y, w, h, delay, transparent, local_bits) in enumerate(frames):
        flags = 1 if transparent is not None else 0
        out += b"!\xf9\x04" + bytes([flags | 8]) + struct.pack("<H", delay) + bytes([(transparent or 0) % 256, 0])
        out += b"," + struct.pack("<HHHH", x, y, w, h) + bytes([(0x80 | (local_bits - 1)) if local_bits else 0])
        if local_bits:
            out += bytes((i * 17 + j) % 256 for j in range(3 * 2 ** local_bits))
        out += _lzw_solid(i % 4, min(w * h, 4096))
    return bytes(out + b";")


def _lzw_solid(index, pixels):
    codes = []
    for start in range(0, pixels, 2):
        codes += [4, index] + ([index] if start + 1 < pixels else [])
    codes.append(5)
    bits = sum(c << (3 * i) for i, c in enumerate(codes))
    data = bits.to_bytes((3 * len(codes) + 7) // 8, "little")
    blocks = b"".join(bytes([len(data[i:i + 255])]) + data[i:i + 255] for i in range(0, len(data), 255))
    return b"\x02" + blocks + b"\x00"


def png(width, height, frames=1, declared_frames=None, color_type=2, idat=b""):
    """A PNG (an APNG when frames > 1 or declared_frames is given) that may declare anything."""
    chunks = [(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0))]
    if frames > 1 or declared_frames is not None:
        chunks.append((b"acTL", struct.pack(">II", declared_frames or frames, 0)))
    raw = idat or zlib.compress(b"\x00" + b"\x80" * 3 * min(width, 64))
    seq = 0
    for i in range(frames):
        if frames > 1 or declared_frames is not None:
            chunks.append((b"fcTL", struct.pack(">IIIIIHHBB", seq, min(width, 64), 1, 0, 0, 0, 0, 0, 0)))
            seq += 1
        if i == 0:
            chunks.append((b"IDAT", raw))
        else:
            chunks.append((b"fdAT", struct.pack(">I", seq) + raw))
            seq += 1
    return png_bytes(*chunks)


def webp_canvas(width, height):
    """A still WebP whose VP8X header declares a width x height canvas over a tiny real image."""
    real = seeds()["webp_still"][1]
    payload = real[12:]  # the chunks after RIFF....WEBP
    vp8x = b"VP8X" + struct.pack("<I", 10) + bytes([0x10, 0, 0, 0])
    vp8x += (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    if payload.startswith(b"VP8X"):
        payload = payload[18:]
    body = b"WEBP" + vp8x + payload
    return b"RIFF" + struct.pack("<I", len(body)) + body


def jpeg_declared(width, height):
    """A real JPEG whose frame header (SOF) declares other dimensions."""
    data = bytearray(seeds()["jpeg"][1])
    at = data.find(b"\xff\xc0")
    data[at + 5:at + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def avif_declared(width, height):
    """A real AVIF whose image extents box (ispe) declares other dimensions."""
    data = bytearray(seeds()["avif_still"][1])
    at = data.find(b"ispe")
    data[at + 8:at + 16] = struct.pack(">II", width, height)
    return bytes(data)


def bmp_declared(width, height):
    data = bytearray(seeds()["bmp"][1])
    data[18:26] = struct.pack("<ii", width, height)
    return bytes(data)


def _dots(n, delay=0):
    """n GIF frames of one pixel each."""
    return [(0, 0, 1, 1, delay, None, 0)] * n


@lru_cache(maxsize=None)
def structured():
    """name -> (suffix, bytes): the hand-built hostile files, each a case the fuzzer may miss."""
    return {
        "gif_screen_huge": (".gif", gif((65535, 65535), _dots(2))),
        "gif_screen_just_under": (".gif", gif((6000, 6600), _dots(3, 5))),
        "gif_frame_outside_screen": (".gif", gif((16, 16), [(60000, 60000, 1, 1, 5, None, 0)] * 2)),
        "gif_frame_grows_screen": (".gif", gif((16, 16), [(0, 0, 1, 1, 5, None, 0), (0, 0, 9000, 9000, 5, None, 0)])),
        "gif_5000_frames": (".gif", gif((8, 8), [(0, 0, 8, 8, i % 3, None, 0) for i in range(5000)])),
        "gif_zero_duration": (".gif", gif((8, 8), _dots(40))),
        "gif_no_palette": (".gif", gif((8, 8), _dots(3, 4), global_palette=False)),
        "gif_index_past_palette": (".gif", gif((8, 8), [(0, 0, 8, 8, 5, 200, 0)] * 3, palette_bits=1)),
        "gif_local_palettes": (".gif", gif((8, 8), [(0, 0, 8, 8, 5, i, 1 + i % 8) for i in range(12)])),
        "gif_header_only": (".gif", gif((8, 8), [])),
        "png_huge": (".png", png(100_000, 100_000)),
        "png_zero": (".png", png(0, 0)),
        "png_bad_color_type": (".png", png(8, 8, color_type=5)),
        "png_idat_garbage": (".png", png(8, 8, idat=b"\x78\x9c" + bytes(range(256)))),
        "apng_declares_2g_frames": (".png", png(8, 8, frames=3, declared_frames=2**31 - 1)),
        "apng_declares_0_frames": (".png", png(8, 8, frames=2, declared_frames=0)),
        "webp_canvas_huge": (".webp", webp_canvas(16383, 16383)),
        "jpeg_declares_huge": (".jpg", jpeg_declared(65500, 65500)),
        "jpeg_declares_zero": (".jpg", jpeg_declared(0, 0)),
        "avif_declares_huge": (".avif", avif_declared(7000, 6000)),  # under libavif's limit, over ours
        "avif_declares_zero": (".avif", avif_declared(0, 0)),
        "bmp_declares_huge": (".bmp", bmp_declared(50000, 50000)),
        "bmp_negative": (".bmp", bmp_declared(-40, -2**31)),
        "png_named_gif": (".gif", seeds()["png"][1]),
        "mp4_named_gif": (".gif", seeds()["mp4"][1]),
        "gif_named_mp4": (".mp4", seeds()["gif"][1]),
        "eps_named_png": (".png", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"),
        "tiff_named_png": (".png", _save(_frames(1, 8), "TIFF")),
        "ico_named_png": (".png", _save(_frames(1, 16), "ICO")),
        "text_named_mp4": (".mp4", b"ftypisom" * 50),
        "one_byte": (".webp", b"R"),
    }


MAGIC = (b"GIF89a", b"GIF87a", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"RIFF\x00\x01\x00\x00WEBPVP8 ",
         b"RIFF\x00\x01\x00\x00WEBPVP8X", b"\x00\x00\x00\x1cftypavif", b"BM", b"\x00\x00\x00\x18ftypmp42",
         b"\x1aE\xdf\xa3", b"")
SUFFIXES = (".gif", ".webp", ".avif", ".png", ".jpg", ".bmp", ".mp4", ".webm", ".mkv", ".mov", ".avi")


def random_input(rng):
    """(suffix, bytes) drawn from a random.Random, for bench/fuzz_long.py (test_fuzz.py draws the
    same kinds through hypothesis): mostly a seed or a hand-built file with a few mutations,
    sometimes random bytes behind a real magic number."""
    roll = rng.random()
    if roll < 0.1:
        data = rng.choice(MAGIC) + rng.randbytes(rng.randint(0, 2048))
        return rng.choice(SUFFIXES), data
    pool = seeds() if roll < 0.85 else structured()
    suffix, data = pool[rng.choice(sorted(pool))]
    ops = [(rng.choice(OPS), rng.getrandbits(32), rng.getrandbits(16)) for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 5, 8)))]
    data = mutate(data, ops)
    if rng.random() < 0.7:
        data = fix_png_crcs(data)
    if rng.random() < 0.1:  # chat apps lose or swap extensions
        suffix = rng.choice(SUFFIXES)
    return suffix, data


BAD = {"truncated.gif", "text.png", "empty.gif"}


def sticker_folder(src):
    """17 files: faces, no faces, animations, a clip, two of one name, and BAD (unreadable)."""
    (src / "a").mkdir(parents=True)
    (src / "b").mkdir()
    for i in range(6):
        card = hopper(200 + 30 * i).rotate(4 * i, fillcolor=(240, 200, 80))
        card.save(src / f"face{i}.{['png', 'jpg', 'webp'][i % 3]}")
    for i in range(4):
        blank(color=(40 * i, 120, 200)).save(src / f"plain{i}.png")
    blank(color=(1, 2, 3)).save(src / "a" / "same.png")
    blank(color=(3, 2, 1)).save(src / "b" / "same.png")
    face_gif(src / "b" / "wave.gif")
    face_mp4(src / "b" / "drift.mp4", seconds=1)
    data = (src / "b" / "wave.gif").read_bytes()
    (src / "truncated.gif").write_bytes(data[: len(data) // 8])  # cut inside its first frame
    (src / "text.png").write_text("not a picture")
    (src / "empty.gif").write_bytes(b"")
    return src
