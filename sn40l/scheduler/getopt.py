"""A getopt_long work-alike for the Slurm commands, so they accept and refuse what Slurm does.

Slurm's commands parse with glibc's ``getopt_long``: ``--opt=value``, ``--opt value``,
``-o value``, ``-ovalue``, clustered short flags (``-vH``), unambiguous prefixes of long
options (``--part=batch``), and the same messages for what is wrong. sbatch and srun stop at the
first operand (the script and its arguments follow); the others accept options anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Opt:
    """One option: short letter (or ''), long name (or ''), whether it takes a value
    ('no', 'yes', 'optional'), and the key it sets (repeats append when ``many``)."""

    short: str
    long: str
    arg: str
    dest: str
    many: bool = False


class UsageError(Exception):
    """A command line that getopt refuses; ``str`` is the getopt-style message."""


class Parser:
    """Parses argv against a table of :class:`Opt`."""

    def __init__(self, prog: str, opts: list[Opt], stop_at_operand: bool = False):
        self.prog = prog
        self.opts = opts
        self.stop_at_operand = stop_at_operand
        self.by_short = {o.short: o for o in opts if o.short}
        self.by_long = {o.long: o for o in opts if o.long}

    def _long(self, name: str) -> Opt:
        if name in self.by_long:
            return self.by_long[name]
        matches = [n for n in self.by_long if n.startswith(name)]
        distinct = {self.by_long[n].dest for n in matches}
        if len(matches) == 1 or (matches and len(distinct) == 1):
            return self.by_long[matches[0]]
        if matches:
            options = " ".join(f"'--{m}'" for m in sorted(matches))
            raise UsageError(f"{self.prog}: option '--{name}' is ambiguous; possibilities: "
                             f"{options}")
        raise UsageError(f"{self.prog}: unrecognized option '--{name}'")

    def parse(self, argv: list[str]) -> tuple[dict, list[str], list[tuple[str, object]]]:
        """(values by dest, operands, [(dest, value)] in command-line order)."""
        values: dict = {}
        order: list[tuple[str, object]] = []
        operands: list[str] = []

        def put(opt: Opt, value: object) -> None:
            order.append((opt.dest, value))
            if opt.many:
                values.setdefault(opt.dest, []).append(value)
            else:
                values[opt.dest] = value

        i = 0
        while i < len(argv):
            a = argv[i]
            if a == "--":
                operands += argv[i + 1:]
                break
            if a.startswith("--"):
                name, eq, val = a[2:].partition("=")
                opt = self._long(name)
                if opt.arg == "no":
                    if eq:
                        raise UsageError(f"{self.prog}: option '--{opt.long}' doesn't allow an "
                                         "argument")
                    put(opt, True)
                elif eq:
                    put(opt, val)
                elif opt.arg == "optional":
                    put(opt, True)
                else:
                    if i + 1 >= len(argv):
                        raise UsageError(f"{self.prog}: option '--{opt.long}' requires an "
                                         "argument")
                    i += 1
                    put(opt, argv[i])
            elif a.startswith("-") and len(a) > 1:
                j = 1
                while j < len(a):
                    ch = a[j]
                    opt = self.by_short.get(ch)
                    if opt is None:
                        raise UsageError(f"{self.prog}: invalid option -- '{ch}'")
                    if opt.arg == "no":
                        put(opt, True)
                        j += 1
                        continue
                    rest = a[j + 1:]
                    if rest:
                        put(opt, rest)
                    elif opt.arg == "optional":
                        put(opt, True)
                    else:
                        if i + 1 >= len(argv):
                            raise UsageError(f"{self.prog}: option requires an argument -- "
                                             f"'{ch}'")
                        i += 1
                        put(opt, argv[i])
                    break
            else:
                if self.stop_at_operand:
                    operands += argv[i:]
                    break
                operands.append(a)
            i += 1
        return values, operands, order
