"""How long each frame of a GIF or animated WebP shows, read from the file's blocks without
decoding a pixel. Knowing the times first, the sampler decodes an animation once and keeps only
the frames it picks; otherwise every frame is decoded and held, or decoded twice.

Each reader mirrors what Pillow reports as a frame's "duration" (GifImagePlugin's block walk,
libwebp's ANMF duration) and gives up, returning None, on anything it is not sure of: a file cut
short, a malformed block. The caller then learns the times by decoding, as before.
"""


def durations_ms(data):
    """Each frame's declared duration in ms (None where a GIF frame declares none), or None."""
    try:
        if data[:6] in (b"GIF87a", b"GIF89a"):
            return _gif(data)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _webp(data)
    except IndexError:  # the blocks ran past the end of the file
        return None
    return None


def _gif(data):
    flags = data[10]
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    durations, delay = [], None
    while pos < len(data):
        kind, pos = data[pos], pos + 1
        if kind == 0x3B:  # trailer
            break
        if kind == 0x21:  # extension: label, then sub-blocks
            label, pos = data[pos], pos + 1
            if label == 0xF9:  # graphic control: the next frame's delay, in 1/100 s
                if data[pos] < 3:
                    return None
                delay = (data[pos + 2] | data[pos + 3] << 8) * 10
            pos = _after_sub_blocks(data, pos)
        elif kind == 0x2C:  # image: descriptor, local palette, LZW code size, sub-blocks
            local = data[pos + 8]
            pos += 9 + (3 << ((local & 7) + 1) if local & 0x80 else 0) + 1
            pos = _after_sub_blocks(data, pos)
            durations.append(delay)
            delay = None
        # Pillow steps over any other byte between blocks; so does this.
    return durations


def _after_sub_blocks(data, pos):
    while data[pos]:  # an IndexError past the end: the file is cut short
        pos += data[pos] + 1
    return pos + 1


def _webp(data):
    durations, pos = [], 12
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos + 4:pos + 8], "little")
        if data[pos:pos + 4] == b"ANMF":
            if size < 16 or pos + 24 > len(data):
                return None
            durations.append(int.from_bytes(data[pos + 20:pos + 23], "little"))
        pos += 8 + size + (size & 1)
    return durations
