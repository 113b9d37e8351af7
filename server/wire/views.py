"""How the chains are shown, by name, and the one rule that resolves ``auto`` (no torch).

Two views draw images (`ldam.sampling.images` does the drawing):

- ``symmetric``, the paper's (section 5.1): each image scaled by its own peak, grey = 0.
- ``input``: the image as the network's data holds it, de-normalized and clipped.

``auto``, the default on every surface (the dashboard's `view` parameter, ``ldam sample
--view``, ``ldam atlas --view``), picks one per network from its channel count
(`resolve_view`): 3 channels are a colour network, whose samples read best in its own colours
(the input view); any other count (MNIST's 1, or 4 and more, shown channel by channel) keeps the
paper's symmetric scale, where grey = 0 shows which way each pixel drives the unit.
"""

from __future__ import annotations

from typing import Literal, get_args

from ldam.errors import UserError

# What a surface accepts, and what a panel is actually drawn in.
View = Literal["auto", "symmetric", "input"]
Shown = Literal["symmetric", "input"]
VIEWS: tuple[str, ...] = get_args(View)
SHOWN_VIEWS: tuple[str, ...] = get_args(Shown)
DEFAULT_VIEW: View = "auto"
# The channel count of a colour (RGB) network: the one `auto` shows in its input space.
COLOUR_CHANNELS = 3


class ViewError(UserError):
    """An unknown view name; the message is one sentence naming the field ``view``."""


def resolve_view(view: str, channels: int) -> Shown:
    """The view images of `channels` channels are drawn in: `view` itself when it is
    ``symmetric`` or ``input``; for ``auto``, ``input`` with 3 channels (a colour network)
    and ``symmetric`` with any other count. `ViewError` for any other name."""
    if view == "auto":
        return "input" if channels == COLOUR_CHANNELS else "symmetric"
    if view == "symmetric" or view == "input":
        return view
    raise ViewError(f"The view must be one of {', '.join(VIEWS)}, got {view!r}.", "view")
