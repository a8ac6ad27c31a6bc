"""What the Gemini kind adds to the CLI: the help of the run option it gives meaning to (`--fallback`). Imports
nothing: the CLI reads it for `--help`."""

from __future__ import annotations

OPTION_HELP = {
    "fallback": "Fall back from gemini-2.5-pro to gemini-2.5-flash when pro's quota is exhausted (recorded per "
                "agent; default: the project's [gemini] fallback; env: SPARC_GEMINI_FALLBACK).",
}
OPTION_ALIASES = {"fallback": "--gemini-fallback/--no-gemini-fallback"}  # the old spelling, still accepted (hidden)
