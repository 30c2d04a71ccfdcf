"""A line for the user on stderr, one at a time. CPython's TextIOWrapper can lose a line written
while another thread writes one (gh-118138): watch --live's "watching" line was lost now and then,
the preview printing in the main thread as the watch's thread printed."""
import threading

import click

from .paths import shown

_SAYING = threading.Lock()


def say(message):
    with _SAYING:
        click.echo(shown(message), err=True)
