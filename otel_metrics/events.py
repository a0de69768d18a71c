"""Hook input -> event: the rules that decide what is a slash command or a skill.

Stdlib-only and regex-free: it runs on the hook's fast path.
"""

from .limits import NAME_MAX_CHARS

TYPE_CHECKING = False  # typing imports `re`; the hook's fast path must not pay for it
if TYPE_CHECKING:
    from typing import Mapping, Optional, Tuple

    Decision = Tuple[str, str, int]  # (event kind, command or skill name, prompt length)

SLASH_COMMAND = "slash_command"
SKILL = "skill"
# A typed prompt: UserPromptExpansion fires only when a typed command expands, UserPromptSubmit
# for every prompt; both carry the raw prompt as typed.
PROMPT_HOOKS = ("UserPromptSubmit", "UserPromptExpansion")

_FIRST = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_REST = _FIRST | frozenset("._-")


def is_command_name(name: object) -> bool:
    """`seg(:seg)*`, each segment `[A-Za-z0-9][A-Za-z0-9._-]*` (ASCII only), at most limits.NAME_MAX_CHARS."""
    if not isinstance(name, str) or not name or len(name) > NAME_MAX_CHARS:
        return False
    for segment in name.split(":"):
        if not segment or segment[0] not in _FIRST:
            return False
        for char in segment:
            if char not in _REST:
                return False
    return True


def classify(hook_input: "Mapping[str, object]") -> "Optional[Decision]":
    """Return (kind, name, prompt_length) for an event, else None.

    Only the command or skill name and the prompt's length leave this function:
    never the prompt's text or arguments.
    """
    hook_event = hook_input.get("hook_event_name")
    if hook_event in PROMPT_HOOKS or (hook_event is None and "prompt" in hook_input):
        return _slash_command(hook_input.get("prompt"))
    if hook_event == "PreToolUse" or (hook_event is None and "tool_name" in hook_input):
        return _skill(hook_input.get("tool_name"), hook_input.get("tool_input"))
    return None


def _slash_command(prompt: object) -> "Optional[Decision]":
    if not isinstance(prompt, str) or not prompt.startswith("/"):
        return None
    name = prompt.split(None, 1)[0][1:]
    if not is_command_name(name):
        return None  # e.g. "/usr/bin/tool crashes": a path, not a command
    return (SLASH_COMMAND, name, len(prompt))


def _skill(tool_name: object, tool_input: object) -> "Optional[Decision]":
    if tool_name != "Skill" or not isinstance(tool_input, dict):
        return None
    name = tool_input.get("skill")
    if not isinstance(name, str) or not name:
        name = tool_input.get("command")  # Claude Code before `skill` existed
    if not isinstance(name, str):
        return None
    if name.startswith("/"):
        name = name[1:]
    if not is_command_name(name):
        return None
    return (SKILL, name, 0)
