#!/usr/bin/env python3
"""Writes mycel.toml(5) from the example config, so the page says what the
file the tests load says: every section, every key with its default and the
comment above it.

    config-man.py configs/mycel.example.toml VERSION > mycel.toml.5
"""
import re
import sys


def roff(text):
    """Escapes text for a roff paragraph."""
    text = text.replace("\\", "\\e")
    return re.sub(r"^([.'])", r"\\&\1", text, flags=re.M)


def main():
    path, version = sys.argv[1], sys.argv[2]
    out = [
        f'.TH MYCEL.TOML 5 "" "mycel {version}" "File Formats"',
        ".SH NAME",
        "mycel.toml \\- configuration of myceld and mycel",
        ".SH SYNOPSIS",
        "\\fI$MYCEL_CONFIG\\fR, else \\fI$XDG_CONFIG_HOME/mycel/mycel.toml\\fR "
        "(\\fI~/.config/mycel/mycel.toml\\fR); \\fB\\-\\-config\\fR overrides both.",
        ".SH DESCRIPTION",
        "A TOML file read by \\fBmyceld\\fR(1) at start and on SIGHUP or \\fBmycel reload\\fR, and by "
        "\\fBmycel\\fR(1) to find the daemon's socket. An unknown key, a wrong type or a value out of "
        "range is refused with the file, the line and the key. Every key is optional; the defaults "
        "below are those of the example config shipped with mycel.",
        ".PP",
        "Peers pinned with \\fBmycel peers add\\fR or \\fBmycel peers accept\\fR live one file each in "
        "\\fI<stem>.peers.d/\\fR beside the config (\\fImycel.peers.d/\\fR for \\fImycel.toml\\fR), "
        "holding [[peers]] tables only; this file is never rewritten.",
    ]
    comment = []
    for raw in open(path, encoding="utf-8"):
        line = raw.rstrip("\n")
        unset = re.match(r"^#\s*([a-z_]+)\s*=\s*(.*)$", line)
        if unset:  # a key the example leaves commented out: its value is an example
            out += [".TP", f"\\fB{unset.group(1)}\\fR = {roff(unset.group(2))} (commented out in the example)"]
            out += [roff(" ".join(comment)) if comment else "(no description)"]
            comment = []
            continue
        if line.startswith("#"):
            comment.append(line.lstrip("#").strip())
            continue
        section = re.match(r"^\[+([a-z_]+)\]+\s*$", line)
        if section:
            name = line.strip()
            out += [f".SH {roff(name.upper() if name.startswith('[[') else name)}"]
            if comment:
                out += [roff(" ".join(comment))]
            comment = []
            continue
        key = re.match(r"^([a-z_]+)\s*=\s*(.*)$", line)
        if key:
            out += [".TP", f"\\fB{key.group(1)}\\fR = {roff(key.group(2))}"]
            out += [roff(" ".join(comment)) if comment else "(no description)"]
        comment = [] if not line.startswith("#") else comment
    out += [
        ".SH FILES",
        ".TP",
        "\\fI~/.config/mycel/mycel.toml\\fR",
        "the default config",
        ".TP",
        "\\fI~/.config/mycel/mycel.peers.d/\\fR",
        "peers pinned by \\fBmycel peers add|accept\\fR",
        ".SH SEE ALSO",
        "\\fBmyceld\\fR(1), \\fBmycel\\fR(1)",
    ]
    print("\n".join(out))


if __name__ == "__main__":
    main()
