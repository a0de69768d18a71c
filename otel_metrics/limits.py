"""The legacy contract's bounds: what one payload may hold, and what is plausible.

Applied on both sides: the hook records nothing beyond them, the exporter sends
nothing beyond them, the forwarder refuses at its door what breaks them (400),
and the reference endpoint refuses it too. One place, so the sides cannot drift.

Plain constants, no imports: the hook's fast path reads them.
"""

# Identifiers. Claude Code's session ids are UUIDs (36 characters); anything else is
# bounded, printable ASCII without spaces (no control characters, no surrogates).
SESSION_ID_MAX_CHARS = 128
SESSION_ID_CHARACTERS = frozenset(chr(code) for code in range(0x21, 0x7F))
NAME_MAX_CHARS = 128  # a command or skill name, `plugin:command`
VERSION_MAX_CHARS = 64  # the plugin's version
EXIT_REASON_MAX_CHARS = 32  # a short lowercase identifier, else "other"

# Numbers.
PROMPT_LENGTH_MAX = 64 * 1024 * 1024  # characters; the hook reads at most this many bytes of input
COUNT_MAX = 1_000_000_000  # any per-session count: prompts, turns, messages, tool calls, errors
TOKENS_MAX = 10_000_000_000_000  # any per-session token sum
# Records per export, and so the most identical events one data point can stand for.
EVENTS_PER_EXPORT = 500

# Time, in unix seconds. Claude Code did not exist before 2020; a clock may run a little ahead.
EARLIEST_TIMESTAMP = 1_577_836_800  # 2020-01-01T00:00:00Z
FUTURE_SLACK_SECONDS = 86_400  # at most a day ahead of the receiver's clock
SESSION_MAX_SECONDS = 366 * 86_400  # one run of Claude Code

# Sizes.
PAYLOAD_MAX_BYTES = 1024 * 1024  # one legacy payload, as the endpoint takes it
TRANSCRIPT_MAX_BYTES = 1024 * 1024 * 1024  # read per session end (main and subagent files together)
TRANSCRIPT_READ_SECONDS = 120.0  # the longest a session's transcripts may take to read
