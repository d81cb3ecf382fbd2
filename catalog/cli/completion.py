"""`marina completion bash|zsh` prints a script that asks the hidden
`marina __complete WORDS...` for candidates: commands and options from the
parser, and names (environments, pods, actions, applications, packages) from
the API, so the script never goes stale."""

from __future__ import annotations

import argparse
import contextlib

from catalog.cli.client import CliError, connect, environments, list_actions, resolve_env
from catalog.documents import ShownEnvironment

BASH = r"""# marina completion for bash: source <(marina completion bash)
_marina() {
    local cur words cword
    if declare -F _get_comp_words_by_ref >/dev/null; then
        _get_comp_words_by_ref -n : cur words cword
    else
        cur="${COMP_WORDS[COMP_CWORD]}"
        words=("${COMP_WORDS[@]}")
        cword=$COMP_CWORD
    fi
    local IFS=$'\n'
    COMPREPLY=($(marina __complete -- "${words[@]:1:cword}" 2>/dev/null))
    if declare -F __ltrim_colon_completions >/dev/null; then
        __ltrim_colon_completions "$cur"
    fi
}
complete -F _marina marina
"""

ZSH = r"""#compdef marina
# marina completion for zsh: source <(marina completion zsh) after compinit
_marina() {
    local -a candidates
    candidates=("${(@f)$(marina __complete -- "${(@)words[2,CURRENT]}" 2>/dev/null)}")
    compadd -a candidates
}
compdef _marina marina
"""


def cmd_completion(args: argparse.Namespace) -> int:
    print(BASH if args.shell == "bash" else ZSH, end="")
    return 0


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return {k: v for k, v in action.choices.items() if not k.startswith("__")}
    return {}


def candidates(
    top: argparse.ArgumentParser, words: list[str], base: argparse.Namespace
) -> list[str]:
    """What may come in place of the last word, given the words before it."""
    *done, current = words or [""]
    parser, settings = top, vars(base).copy()
    seen: list[str] = []
    i = 0
    while i < len(done):
        word = done[i]
        option = parser._option_string_actions.get(word)
        if option is not None:
            if option.nargs != 0 and i + 1 < len(done):
                settings[option.dest] = done[i + 1]
                i += 1
        elif word in _subcommands(parser):
            parser, seen = _subcommands(parser)[word], []
        elif not word.startswith("-"):
            seen.append(word)
        i += 1
    previous = parser._option_string_actions.get(done[-1]) if done else None
    if previous is not None and previous.nargs != 0:
        found = [str(c) for c in previous.choices or []]
    elif current.startswith("-"):
        found = [o for o in parser._option_string_actions if o.startswith("--") or len(o) == 2]
    elif _subcommands(parser):
        found = list(_subcommands(parser))
    else:
        positionals = [a for a in parser._actions if not a.option_strings]
        found = []
        if len(seen) < len(positionals):
            found = _names(positionals[len(seen)], seen, argparse.Namespace(**settings))
    return sorted({f for f in found if f.startswith(current)})


def _names(action: argparse.Action, seen: list[str], args: argparse.Namespace) -> list[str]:
    if action.choices:
        return [str(c) for c in action.choices]
    with contextlib.suppress(CliError, KeyError, TypeError):
        client = connect(args)
        if action.dest == "env":
            return [e["name"] for e in environments(client)]
        if action.dest == "package":
            return [
                p["name"] for p in client.call("GET", "/v1/catalog/packages?limit=1000")["packages"]
            ]
        if not seen:
            return []
        env_id = resolve_env(client, seen[0])
        if action.dest == "action":
            return [f"{a['objectName']}:{a['name']}" for a in list_actions(client, env_id)]
        env: ShownEnvironment = client.call("GET", f"/v1/environments/{env_id}")
        kinds = {"pod": ("KubernetesPod",)}.get(action.dest)
        return [
            o["?"]["name"]
            for o in env["objects"]
            if (kinds and o["?"]["type"] in kinds)
            or (not kinds and o["?"]["type"] not in ("MasterNode", "MinionNode", "GatewayNode"))
        ]
    return []
