"""`show --image`: a file's sampled frames side by side, each face boxed with its label, in one PNG.

The frames are decoded again as the scan decoded them (media.read with the same frame count
gives the same frames), and the boxes and labels are the recorded ones: the picture shows what
the scan saw, not a new reading.
"""
import os

from PIL import Image, ImageDraw, ImageFont

from . import media
from .library import LibraryError
from .paths import key_path, shown

TILE = 240  # pixels, the longer side of each frame
COLUMNS = 4
GAP = 8
HEADER = 28
CAPTION = 18
MIN_CELL = 150  # pixels: room for a frame's caption under a tall, narrow frame
BOX = (255, 64, 160)
FRAMES_TRIED = (16, 4, 32, 64)  # --frames counts tried after the default, for a record that lacks it


def draw(info, png):
    """Writes info's (library.show_file) frames with their faces into png."""
    if info["error"]:
        raise LibraryError(f"{info['path']} could not be read when scanned ({info['error']}): nothing to draw")
    _check_unchanged(info)
    clip = _as_scanned(info)
    tiles = [_tile(frame, clip.width, [f for f in info["faces"] if f["frame"] == frame.index])
             for frame in clip.frames]
    _write_new(_sheet(tiles, _title(info)), png)


def _write_new(sheet, png):
    """Only ever a new file: a name that exists (a sticker, the database, a link to anything) is
    refused, never written over or through."""
    try:
        fd = os.open(png, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except FileExistsError:
        raise LibraryError(f"{png} exists: --image writes only a new file; choose another name") from None
    except OSError as e:
        raise LibraryError(f"cannot write {png}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            sheet.save(f, format="PNG")
    except OSError as e:
        os.unlink(png)  # ours, made just now: half a picture helps no one
        raise LibraryError(f"cannot write {png}: {e.strerror or e}") from None


def _check_unchanged(info):
    """The recorded boxes drawn on another picture would show what no scan saw."""
    from .scan import file_hash
    try:
        same = file_hash(key_path(info["path"])) == info["hash"]
    except (media.MediaError, OSError) as e:
        raise LibraryError(f"cannot read {shown(info['path'])} again: {getattr(e, 'strerror', None) or e}") from None
    if not same:
        raise LibraryError(f"{shown(info['path'])} has changed since it was scanned: scan it again, then draw it")


def _as_scanned(info):
    """The file read again into the frames the scan sampled. The record keeps how many frames
    that gave, not the --frames asked (repeated picks of a short animation merge), so the usual
    counts are tried in turn until one gives those frames."""
    faced = {f["frame"] for f in info["faces"]}
    clip = None
    for asked in dict.fromkeys((8, info["frames_sampled"] or 1, *FRAMES_TRIED)):
        try:
            clip = media.read(key_path(info["path"]), asked)
        except (media.MediaError, OSError) as e:
            raise LibraryError(f"cannot read {info['path']} again: {e}") from None
        indices = {frame.index for frame in clip.frames}
        if len(indices) == info["frames_sampled"] and faced <= indices:
            break
    return clip


def _title(info):
    whose = " (yours)" if info["user_label"] else ""
    vote = f", vote {info['guess']} {info['confidence']:.2f}" if info["guess"] else ""
    return shown(f"{info['path'].rsplit('/', 1)[-1]}: {info['label']}{whose}{vote}")  # a line break, escaped


def _tile(frame, width, faces):
    """One frame at TILE pixels, its faces boxed (boxes are in the file's own pixels) and labelled."""
    im = Image.fromarray(frame.rgb)
    scale = TILE / max(im.size)
    im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))))
    scale *= frame.rgb.shape[1] / width
    pen = ImageDraw.Draw(im)
    font = ImageFont.load_default(12)
    for face in faces:
        x, y, w, h = (round(v * scale) for v in face["box"])
        pen.rectangle((x, y, x + w, y + h), outline=BOX, width=2)
        text = f"{face['label']} {face['probs'][face['label']]:.2f}"
        left, top, right, bottom = pen.textbbox((x, max(0, y - 15)), text, font=font)
        pen.rectangle((left - 2, top - 1, right + 2, bottom + 1), fill=BOX)
        pen.text((x, max(0, y - 15)), text, fill=(255, 255, 255), font=font)
    caption = Image.new("RGB", (max(im.width, MIN_CELL), im.height + CAPTION), (255, 255, 255))
    caption.paste(im, (0, 0))
    ImageDraw.Draw(caption).text((2, im.height + 2), f"frame {frame.index}  {frame.time:.2f} s  "
                                 f"{len(faces)} face{'s' * (len(faces) != 1)}", fill=(0, 0, 0), font=font)
    return caption


def _sheet(tiles, title):
    columns = min(COLUMNS, len(tiles))
    rows = -(-len(tiles) // columns)
    cell_w, cell_h = max(t.width for t in tiles), max(t.height for t in tiles)
    font = ImageFont.load_default(14)
    title_w = round(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(title, font=font))
    width = max(GAP + columns * (cell_w + GAP), 2 * GAP + title_w)  # the whole title, however narrow the frames
    sheet = Image.new("RGB", (width, HEADER + rows * (cell_h + GAP)), (235, 235, 235))
    ImageDraw.Draw(sheet).text((GAP, 6), title, fill=(0, 0, 0), font=font)
    for i, tile in enumerate(tiles):
        sheet.paste(tile, (GAP + (i % columns) * (cell_w + GAP), HEADER + (i // columns) * (cell_h + GAP)))
    return sheet
