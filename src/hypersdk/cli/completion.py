"""Shell completion for hyperctl, generated from its own argument parser."""

from __future__ import annotations

import argparse


def _words(parser: argparse.ArgumentParser) -> tuple[list[str], dict[str, argparse.ArgumentParser]]:
    options = [s for a in parser._actions for s in a.option_strings]
    children: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            children.update(action.choices)
    return options + sorted(children), children


def bash_completion(parser: argparse.ArgumentParser) -> str:
    """A bash script completing commands, actions and options: eval "$(hyperctl completion bash)"."""
    cases = []

    def walk(p: argparse.ArgumentParser, path: str) -> None:
        words, children = _words(p)
        cases.append(f'        "{path}") words="{" ".join(words)}" ;;')
        for name, child in children.items():
            walk(child, f"{path} {name}".strip())

    walk(parser, "")
    return "\n".join([
        "_hyperctl() {",
        "    local cur path word words",
        '    cur="${COMP_WORDS[COMP_CWORD]}"',
        '    path=""',
        '    for word in "${COMP_WORDS[@]:1:COMP_CWORD-1}"; do',
        '        case "$word" in -*) ;; *) path="${path:+$path }$word" ;; esac',
        "    done",
        '    case "$path" in',
        *cases,
        '        *) words="" ;;',
        "    esac",
        '    COMPREPLY=($(compgen -W "$words" -- "$cur"))',
        "}",
        "complete -o default -F _hyperctl hyperctl",
    ])
