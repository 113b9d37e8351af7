"""The limits both processes enforce, written once (no torch, no web framework).

SECURITY.md lists what each one protects against; the web server's own socket limits (frame
size, client count, timeouts) live in `ldam.web.security`.
"""

from __future__ import annotations

# A control message is a few hundred bytes of JSON; anything above this is refused unparsed.
MAX_MESSAGE_BYTES = 4096
# Brackets may nest this deep in a control message (the deepest valid one has 2 levels); deeper
# is refused before parsing, so json's recursion limit is never reached.
MAX_JSON_DEPTH = 8
# The most chains one panel runs (rows x columns of the grid).
MAX_CHAINS = 256
# The most values a sweep can take (rows of the sweep layout).
MAX_SWEEP_VALUES = 8
# The most units in one "range" layout (columns).
MAX_RANGE_UNITS = 32
# Frames sent to a browser that it has not yet acknowledged; a slow browser gets fewer frames.
MAX_FRAMES_IN_FLIGHT = 2
# The moving windows of one run (every panel of the dashboard together, or one `ldam sample`)
# may take this much memory; a larger window is refused with a sentence naming both sizes.
WINDOW_MEMORY_LIMIT_BYTES = 1 << 30
