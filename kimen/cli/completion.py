"""Shell completion scripts generated from the argparse tree (`kimen completion SHELL`).

The tree is flattened into a table: for each command path ("", "secret", "secret set", …) its
subcommands, its flags, which flags take a value, the choices of flags and positionals, and which
flags or positionals take a secret or profile name. Every script embeds that table and walks the
words typed so far to find the path. bash gets a function; zsh reuses it through `bashcompinit`;
fish gets one `complete` line per flag and subcommand with a condition on the path; elvish an
arg-completer; PowerShell a native argument completer.

Names are not in the script: at completion time it runs `kimen completion --names secrets`
(the vault file's plaintext names: no unlock, no session, no prompt; the `--vault` typed on the
line is passed on) or `--names profiles` (the profile lookup directories), one name per line,
silent and exit 0 on any failure.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .model import Invocation

SHELLS = ("bash", "zsh", "fish", "elvish", "powershell")
NAME_KINDS = ("secrets", "profiles")

# Value flags whose values are names, wherever they appear (positionals are marked where they are
# declared, with `kimen.cli.parser.complete_names`).
NAME_FLAGS = {"--profile": "profiles", "--against-profile": "profiles", "--secret": "secrets"}


@dataclass
class Node:
    subcommands: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    value_flags: list[str] = field(default_factory=list)
    choices: dict[str, list[str]] = field(default_factory=dict)
    positional_choices: list[str] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)  # value flag or "1", "2"… (positional) -> kind


def flatten(parser: argparse.ArgumentParser) -> dict[str, Node]:
    """Command path -> what can be typed there."""
    table: dict[str, Node] = {}

    def walk(p: argparse.ArgumentParser, path: str) -> None:
        node = table.setdefault(path, Node())
        position = 0
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():  # aliases appear as names of their own
                    node.subcommands.append(name)
                    walk(sub, f"{path} {name}".strip())
                continue
            if action.help == argparse.SUPPRESS and action.option_strings:
                continue
            choices = action.choices or getattr(action, "completions", None)
            if action.option_strings:
                node.flags.extend(action.option_strings)
                if action.nargs != 0:
                    node.value_flags.extend(action.option_strings)
                    for flag in action.option_strings:
                        if flag in NAME_FLAGS:
                            node.names[flag] = NAME_FLAGS[flag]
                if choices:
                    for flag in action.option_strings:
                        node.choices[flag] = [str(c) for c in choices]
                continue
            position += 1
            if choices:
                node.positional_choices.extend(str(c) for c in choices)
            kind = getattr(action, "complete_names", None)
            if kind:
                node.names[str(position)] = kind

    walk(parser, "")
    return table


# -- names (run by the scripts at completion time) --


def names(kind: str, inv: Invocation) -> list[str]:
    """`kimen completion --names KIND`: secret names from the vault file (no unlock, no session,
    no prompt), or profile names from the lookup directories."""
    from ..output import capture_warnings

    with capture_warnings():  # a loose vault mode is not the completion's business
        if kind == "secrets":
            from ..access import open_metadata

            with open_metadata(inv) as vault:
                return vault.list_names()
        return list_profiles(inv.env)


def list_profiles(env: Mapping[str, str]) -> list[str]:
    """Profile names (without .kmap) in the lookup directories, sorted and unique."""
    from ..paths import profile_dirs

    found: set[str] = set()
    for directory in profile_dirs(env):
        try:
            entries = os.listdir(directory)
        except OSError:
            continue
        found.update(e[:-5] for e in entries if e.endswith(".kmap") and len(e) > 5)
    return sorted(found)


# -- bash and zsh --


def _bash_words(words: list[str]) -> str:
    return " ".join(words).replace("'", "")


def bash_script(table: dict[str, Node]) -> str:
    # zsh runs this function too (bashcompinit): no local may be named `path` or `words` there.
    # `_kimen_put ARRAY KEY VALUE`: a subscript in a variable means the same key in bash and zsh
    # (a quoted literal subscript keeps its quotes in zsh)
    lines = [
        "# kimen bash completion (generated by `kimen completion bash`)",
        "declare -gA _kimen_subs _kimen_flags _kimen_vflags _kimen_choices _kimen_pos _kimen_names",
        '_kimen_put() { eval "$1[\\$2]=\\$3"; }',
    ]
    for path, node in sorted(table.items()):
        path = f"kimen {path}".strip()  # bash arrays refuse an empty key: paths start with "kimen"
        lines.append(f"_kimen_put _kimen_subs '{path}' '{_bash_words(node.subcommands)}'")
        lines.append(f"_kimen_put _kimen_flags '{path}' '{_bash_words(node.flags)}'")
        lines.append(f"_kimen_put _kimen_vflags '{path}' ' {_bash_words(node.value_flags)} '")
        lines.append(f"_kimen_put _kimen_pos '{path}' '{_bash_words(node.positional_choices)}'")
        for flag, choices in sorted(node.choices.items()):
            lines.append(f"_kimen_put _kimen_choices '{path}|{flag}' '{_bash_words(choices)}'")
        for where, kind in sorted(node.names.items()):
            lines.append(f"_kimen_put _kimen_names '{path}|{where}' '{kind}'")
    lines.append(r"""
_kimen_name_list() {
    if [[ -n "$2" ]]; then
        command kimen completion --names "$1" --vault "$2" 2>/dev/null
    else
        command kimen completion --names "$1" 2>/dev/null
    fi
}

_kimen() {
    local cur prev kpath="kimen" w i key kind npos=0 vault="" kwords
    cur="${COMP_WORDS[COMP_CWORD]}"
    prev="${COMP_WORDS[COMP_CWORD-1]}"
    for ((i = 1; i < COMP_CWORD; i++)); do
        w="${COMP_WORDS[i]}"
        [[ "$w" == "--" ]] && return 0
        if [[ "$w" == -* ]]; then
            [[ "$w" == --vault=* ]] && vault="${w#--vault=}"
            if [[ "${_kimen_vflags[$kpath]}" == *" $w "* && "$w" != *=* ]]; then
                ((i++))
                [[ "$w" == "--vault" && $i -lt $COMP_CWORD ]] && vault="${COMP_WORDS[i]}"
            fi
            continue
        fi
        key="$kpath $w"
        if [[ -n "${_kimen_subs[$key]+x}" ]]; then
            kpath="$key"
            npos=0
        else
            ((npos++))
        fi
    done
    if [[ "$prev" == -* && "${_kimen_vflags[$kpath]}" == *" $prev "* ]]; then
        kind="${_kimen_names[$kpath|$prev]}"
        if [[ -n "$kind" ]]; then
            COMPREPLY=($(compgen -W "$(_kimen_name_list "$kind" "$vault")" -- "$cur"))
        elif [[ -n "${_kimen_choices[$kpath|$prev]+x}" ]]; then
            COMPREPLY=($(compgen -W "${_kimen_choices[$kpath|$prev]}" -- "$cur"))
        else
            COMPREPLY=($(compgen -f -- "$cur"))
        fi
        return 0
    fi
    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "${_kimen_flags[$kpath]}" -- "$cur"))
        return 0
    fi
    kwords="${_kimen_subs[$kpath]} ${_kimen_pos[$kpath]}"
    kind="${_kimen_names[$kpath|$((npos + 1))]}"
    [[ -n "$kind" ]] && kwords="$kwords $(_kimen_name_list "$kind" "$vault")"
    COMPREPLY=($(compgen -W "$kwords" -- "$cur"))
    return 0
}
complete -F _kimen kimen
""")
    return "\n".join(lines) + "\n"


def zsh_script(table: dict[str, Node]) -> str:
    return (
        "#compdef kimen\n"
        "# kimen zsh completion (generated by `kimen completion zsh`): the bash function via bashcompinit\n"
        "autoload -U +X bashcompinit && bashcompinit\n"
        + bash_script(table)
    )


# -- fish --


def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


_FISH_STATE = r"""# kimen fish completion (generated by `kimen completion fish`)
# __kimen_state prints three lines: the command path, the positionals typed there, the --vault
function __kimen_state
    set -l words (commandline -opc)
    set -e words[1]
    set -l path ''
    set -l npos 0
    set -l vault ''
    set -l skip ''
    for w in $words
        if test -n "$skip"
            test "$skip" = '--vault'; and set vault $w
            set skip ''
            continue
        end
        if test "$w" = '--'
            printf '%s\n' '--' 0 ''
            return
        end
        if string match -q -- '-*' $w
            string match -q -- '--vault=*' $w; and set vault (string replace -- '--vault=' '' $w)
            contains -- $w (__kimen_vflags "$path"); and set skip $w
            continue
        end
        set -l key (string trim -- "$path $w")
        if contains -- "$key" (__kimen_paths)
            set path $key
            set npos 0
        else
            set npos (math $npos + 1)
        end
    end
    printf '%s\n' "$path" $npos "$vault"
end
function __kimen_at -a want_path want_npos
    set -l state (__kimen_state)
    test "$state[1]" = "$want_path"; or return 1
    test -z "$want_npos"; or test "$state[2]" = "$want_npos"
end
function __kimen_names -a kind
    set -l state (__kimen_state)
    if test -n "$state[3]"
        command kimen completion --names $kind --vault $state[3] 2>/dev/null
    else
        command kimen completion --names $kind 2>/dev/null
    end
end
"""


def fish_script(table: dict[str, Node]) -> str:
    lines = [_FISH_STATE.rstrip("\n"), "function __kimen_paths"]
    lines += [f"    echo {_fish_quote(p)}" for p in sorted(table) if p]
    lines += ["end", "function __kimen_vflags", "    switch $argv[1]"]
    for path, node in sorted(table.items()):
        if node.value_flags:
            lines.append(f"        case {_fish_quote(path)}")
            lines += [f"            echo -- {_fish_quote(f)}" for f in node.value_flags]
    lines += ["    end", "end", "complete -c kimen -f"]
    for path, node in sorted(table.items()):
        cond = f"__kimen_at {_fish_quote(path)}"
        for sub in node.subcommands:
            lines.append(f"complete -c kimen -n {_fish_quote(cond)} -a {_fish_quote(sub)}")
        for choice in node.positional_choices:
            lines.append(f"complete -c kimen -n {_fish_quote(cond)} -a {_fish_quote(choice)}")
        for where, kind in sorted(node.names.items()):
            if where.isdigit():
                at = f"{cond} {int(where) - 1}"
                lines.append(f"complete -c kimen -n {_fish_quote(at)} -a {_fish_quote(f'(__kimen_names {kind})')}")
        for flag in node.flags:
            if not flag.startswith("--"):
                continue
            extra = ""
            if flag in node.names:
                extra = f" -x -a {_fish_quote(f'(__kimen_names {node.names[flag]})')}"
            elif flag in node.choices:
                extra = f" -x -a {_fish_quote(' '.join(node.choices[flag]))}"
            elif flag in node.value_flags:
                extra = " -r -F"
            lines.append(f"complete -c kimen -n {_fish_quote(cond)} -l {flag[2:]}{extra}")
    return "\n".join(lines) + "\n"


# -- elvish --


def _elvish_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _elvish_list(words: list[str]) -> str:
    return "[" + " ".join(_elvish_str(w) for w in words) + "]"


def _elvish_map(items: dict[str, str]) -> str:
    if not items:
        return "[&]"
    return "[" + " ".join(f"&{_elvish_str(k)}={v}" for k, v in sorted(items.items())) + "]"


def elvish_script(table: dict[str, Node]) -> str:
    """An arg-completer. Elvish filters the candidates by what was typed, so the completer outputs
    every word that fits the position. The lines after `# install` hook it into the line editor."""
    keyed = {f"kimen {p}".strip(): n for p, n in table.items()}
    subs = _elvish_map({p: _elvish_list(n.subcommands) for p, n in keyed.items()})
    flags = _elvish_map({p: _elvish_list(n.flags) for p, n in keyed.items()})
    vflags = _elvish_map({p: _elvish_list(n.value_flags) for p, n in keyed.items()})
    pos = _elvish_map({p: _elvish_list(n.positional_choices) for p, n in keyed.items() if n.positional_choices})
    choices = _elvish_map({f"{p}|{f}": _elvish_list(c) for p, n in keyed.items() for f, c in n.choices.items()})
    name_map = _elvish_map({f"{p}|{w}": _elvish_str(k) for p, n in keyed.items() for w, k in n.names.items()})
    return f"""# kimen elvish completion (generated by `kimen completion elvish`)
use str
var kimen-subs = {subs}
var kimen-flags = {flags}
var kimen-vflags = {vflags}
var kimen-pos = {pos}
var kimen-choices = {choices}
var kimen-names = {name_map}

fn kimen-name-list {{|kind vault|
    try {{
        if (!=s $vault '') {{
            e:kimen completion --names $kind --vault $vault 2>/dev/null | from-lines
        }} else {{
            e:kimen completion --names $kind 2>/dev/null | from-lines
        }}
    }} catch {{ }}
}}

var kimen-files~ = {{|word| }}

fn kimen-complete {{|@words|
    var path = kimen
    var npos = (num 0)
    var vault = ''
    var n = (count $words)
    var prev = ''
    if (> $n 1) {{ set prev = $words[-2] }}
    var i = (num 1)
    while (< $i (- $n 1)) {{
        var w = $words[$i]
        set i = (+ $i 1)
        if (==s $w '--') {{ return }}
        if (str:has-prefix $w '-') {{
            if (str:has-prefix $w '--vault=') {{ set vault = (str:trim-prefix $w '--vault=') }}
            if (and (not (str:contains $w '=')) (has-value $kimen-vflags[$path] $w)) {{
                if (and (==s $w '--vault') (< $i (- $n 1))) {{ set vault = $words[$i] }}
                set i = (+ $i 1)
            }}
            continue
        }}
        var key = $path' '$w
        if (has-key $kimen-subs $key) {{
            set path = $key
            set npos = (num 0)
        }} else {{
            set npos = (+ $npos 1)
        }}
    }}
    if (and (str:has-prefix $prev '-') (has-value $kimen-vflags[$path] $prev)) {{
        var at = $path'|'$prev
        if (has-key $kimen-names $at) {{
            kimen-name-list $kimen-names[$at] $vault
        }} elif (has-key $kimen-choices $at) {{
            all $kimen-choices[$at]
        }} else {{
            kimen-files $words[-1]
        }}
        return
    }}
    if (str:has-prefix $words[-1] '-') {{
        all $kimen-flags[$path]
        return
    }}
    all $kimen-subs[$path]
    if (has-key $kimen-pos $path) {{ all $kimen-pos[$path] }}
    var at = $path'|'(to-string (+ $npos 1))
    if (has-key $kimen-names $at) {{ kimen-name-list $kimen-names[$at] $vault }}
}}

# install (interactive shells only: the edit: module exists there)
set kimen-files~ = $edit:complete-filename~
set edit:completion:arg-completer[kimen] = $kimen-complete~
"""


# -- PowerShell --


def _ps_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ps_list(words: list[str]) -> str:
    return "@(" + ", ".join(_ps_str(w) for w in words) + ")"


def powershell_script(table: dict[str, Node]) -> str:
    """A native argument completer (Register-ArgumentCompleter -Native) for PowerShell 5.1+."""
    rows = []
    for path, node in sorted(table.items()):
        key = f"kimen {path}".strip()
        choices = "; ".join(f"{_ps_str(f)} = {_ps_list(c)}" for f, c in sorted(node.choices.items()))
        name_map = "; ".join(f"{_ps_str(w)} = {_ps_str(k)}" for w, k in sorted(node.names.items()))
        rows.append(
            f"        {_ps_str(key)} = @{{ subs = {_ps_list(node.subcommands)}; flags = {_ps_list(node.flags)}; "
            f"vflags = {_ps_list(node.value_flags)}; pos = {_ps_list(node.positional_choices)}; "
            f"choices = @{{ {choices} }}; names = @{{ {name_map} }} }}"
        )
    table_text = "\n".join(rows)
    return f"""# kimen PowerShell completion (generated by `kimen completion powershell`)
# Load it from your profile: kimen completion powershell | Out-String | Invoke-Expression
Register-ArgumentCompleter -Native -CommandName kimen -ScriptBlock {{
    param($wordToComplete, $commandAst, $cursorPosition)
    $table = @{{
{table_text}
    }}
    function KimenNames([string]$Kind, [string]$Vault) {{
        try {{
            if ($Vault) {{ & kimen completion --names $Kind --vault $Vault 2>$null }}
            else {{ & kimen completion --names $Kind 2>$null }}
        }} catch {{ }}
    }}
    # the words before the one being completed
    $typed = @($commandAst.CommandElements |
        Where-Object {{ $_.Extent.EndOffset -lt $cursorPosition -or
                       ($_.Extent.EndOffset -eq $cursorPosition -and $wordToComplete -eq '') }} |
        ForEach-Object {{ $_.ToString() }})
    $path = 'kimen'; $npos = 0; $vault = ''
    for ($i = 1; $i -lt $typed.Count; $i++) {{
        $w = $typed[$i]
        if ($w -eq '--') {{ return }}
        if ($w.StartsWith('-')) {{
            if ($w.StartsWith('--vault=')) {{ $vault = $w.Substring(8) }}
            if (-not $w.Contains('=') -and $table[$path].vflags -contains $w) {{
                $i++
                if ($w -eq '--vault' -and $i -lt $typed.Count) {{ $vault = $typed[$i] }}
            }}
            continue
        }}
        $key = "$path $w"
        if ($table.ContainsKey($key)) {{ $path = $key; $npos = 0 }} else {{ $npos++ }}
    }}
    $node = $table[$path]
    $prev = if ($typed.Count -gt 1) {{ [string]$typed[$typed.Count - 1] }} else {{ '' }}
    $candidates = @()
    if ($prev.StartsWith('-') -and $node.vflags -contains $prev) {{
        if ($node.names.ContainsKey($prev)) {{ $candidates = @(KimenNames $node.names[$prev] $vault) }}
        elseif ($node.choices.ContainsKey($prev)) {{ $candidates = $node.choices[$prev] }}
        else {{ return }}  # a path: PowerShell's own file completion
    }} elseif ($wordToComplete.StartsWith('-')) {{
        $candidates = $node.flags
    }} else {{
        $candidates = @($node.subs) + @($node.pos)
        $at = [string]($npos + 1)
        if ($node.names.ContainsKey($at)) {{ $candidates += @(KimenNames $node.names[$at] $vault) }}
    }}
    $candidates | Where-Object {{ $_ -like "$wordToComplete*" }} | ForEach-Object {{
        [System.Management.Automation.CompletionResult]::new($_, $_, 'ParameterValue', $_)
    }}
}}
"""


_SCRIPTS: dict[str, Callable[[dict[str, Node]], str]] = {
    "bash": bash_script, "zsh": zsh_script, "fish": fish_script, "elvish": elvish_script,
    "powershell": powershell_script,
}


def script(shell: str) -> str:
    from .parser import build_parser

    return _SCRIPTS[shell](flatten(build_parser()))
