"""Two models on the same items (faces, or sticker files): only the items one gets right and the
other wrong tell them apart. With D such items a gap under sqrt(D), one SD (McNemar), is a tie."""
import math


def is_tie(gap, discordant):
    return abs(gap) < max(1.0, math.sqrt(discordant))


def verdict(gap, tie):
    return "a tie (under 1 SD)" if tie else ("better" if gap > 0 else "worse")
