"""Serving programs that SocketActor gains as a mixin: a CoE batch's work on one TP group in one
Ray call per socket instead of several round trips per request.

The driver decides everything that does not depend on modeled time (which expert runs where, hit
or miss, which experts to evict, what to prefetch: :mod:`sn40l.coe.runtime`) and sends every
socket of the group the same program. The sockets run it in order; wherever the driver used to
collect the sockets' modeled ends and move them all to the latest (after a copy into HBM, after
each run), they agree on that latest end among themselves
(:meth:`~sn40l.collectives.communicator.Communicator.agree_max`, not modeled) and join it. So
every socket performs the same operations at the same modeled times as when driven step by
step, and the modeled numbers are the same; only the round trips are gone.

Every run of a program starts at one modeled time on all sockets of the group (the program's
base, a join, or an agreed end), so a batch the engines replay
(:meth:`~sn40l.socket.engine.TileEngine.generate_batch`) ends where the group agreed the first
time, as long after its start; the sockets join that end without agreeing again. The driver
checks that every socket reports the same modeled times.

Records are frozen dataclasses: :class:`Run` (a model over prompts), :class:`Switch` (evict,
then copy an expert into HBM), :class:`Item` (one request group: its switch, run and prefetch);
the replies are :class:`RunDone`, :class:`SwitchDone` and :class:`ItemDone`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from sn40l.choices import Choice
from sn40l.errors import ConfigError


class Ready(Choice):
    """When an item's expert is in HBM: at once (a hit), after a copy the item waits for
    (a miss), at the end of a prefetch from an earlier batch (``pending_ns``) or of one
    started earlier in the same program."""

    HIT = "hit"
    SWITCH = "switch"
    PENDING = "pending"
    PREFETCHED = "prefetched"


@dataclass(frozen=True)
class Run:
    """A model over prompts, ``max_batch`` at a time; each chunk's end is agreed and joined."""

    tag: str
    prompts: tuple[tuple[int, ...], ...]
    new_tokens: int
    max_batch: int


@dataclass(frozen=True)
class Switch:
    """Evict ``victims`` (a dirty KV segment is copied home first), then copy ``tag`` into HBM;
    ``wait=False`` leaves both copies in flight on the DMA engine (a prefetch)."""

    tag: str
    victims: tuple[str, ...]
    wait: bool


@dataclass(frozen=True)
class Item:
    """One request group on the group: it starts at ``not_before`` at the earliest (its
    prompts' arrival), its expert is ready as ``ready`` says (``switch`` for a miss,
    ``pending_ns`` for a prefetch of an earlier batch), it runs ``run`` and, once ready,
    starts ``prefetch`` of the next expert bound for the group."""

    run: Run
    not_before: int
    ready: Ready
    switch: Switch | None = None
    pending_ns: int | None = None
    prefetch: Switch | None = None


@dataclass(frozen=True)
class RunDone:
    """This socket's tokens per prompt of a run and the group's agreed end."""

    tokens: list[list[int]]
    end_ns: int


@dataclass(frozen=True)
class SwitchDone:
    """This socket's bytes copied into HBM and back per victim, and the group's agreed end of
    the copy into HBM."""

    copied_in: int
    copied_back: tuple[int, ...]
    end_ns: int


@dataclass(frozen=True)
class ItemDone:
    """An item's modeled start, ready and end (the same on every socket of the group)."""

    start_ns: int
    ready_ns: int
    run: RunDone
    switch: SwitchDone | None
    prefetch: SwitchDone | None


class ServeOps:
    """Mixin of :class:`sn40l.cluster.actor.SocketActor` (after EngineOps): serving programs."""

    def _agree(self, group: str | None) -> Callable[[int], int]:
        if group is None:
            return int
        return self.communicator(group).agree_max

    def _run(self, run: Run, agree: Callable[[int], int]) -> RunDone:
        clock = self.socket.clock
        tokens: list[list[int]] = []
        end = clock.now
        for i in range(0, len(run.prompts), run.max_batch):
            # the engine joins the group's agreed end (a replayed batch: the recorded one)
            out = self._generate_batch(run.tag, run.prompts[i:i + run.max_batch],
                                       run.new_tokens, agree)
            tokens += out["tokens"]
            end = out["end_ns"]
        return RunDone(tokens, end)

    def _switch(self, sw: Switch, agree: Callable[[int], int]) -> SwitchDone:
        engines = [self._engine(sw.tag)] + [self._engine(v) for v in sw.victims]
        with self._lock:
            back = tuple(e.evict(sw.wait)["copied_back"] for e in engines[1:])
            res = engines[0].activate(sw.wait)
        return SwitchDone(res["bytes"], back, agree(res["end_ns"]))

    def engine_chain(self, group: str | None, base_ns: int, runs: list[Run],
                     job: int | None = None) -> list[RunDone]:
        """From modeled ``base_ns`` (the group's now), the runs one after another, each
        starting where the group agreed the previous one ended (the CoE router)."""
        self._check_job(job)
        agree = self._agree(group)
        self.socket.clock.advance_to(base_ns)
        return [self._run(r, agree) for r in runs]

    def engine_route_serve(self, group: str | None, base_ns: int, runs: list[Run],
                           items: list[Item], job: int | None = None
                           ) -> tuple[list[RunDone], list[ItemDone]]:
        """:meth:`engine_chain` of ``runs`` from ``base_ns``, then :meth:`engine_serve` of
        ``items`` from the chain's agreed end: a batch's router and the items of the router's
        group in one call (the CoE runtime, for prompts the router already routed)."""
        done = self.engine_chain(group, base_ns, runs, job)
        return done, self.engine_serve(group, self.socket.clock.now, items, job)

    def engine_serve(self, group: str | None, base_ns: int, items: list[Item],
                     job: int | None = None) -> list[ItemDone]:
        """From modeled ``base_ns`` (the group's now), the items in order (see :class:`Item`);
        the same program runs on every socket of TP group ``group``."""
        self._check_job(job)
        agree = self._agree(group)
        clock = self.socket.clock
        clock.advance_to(base_ns)
        prefetched: dict[str, int] = {}
        out = []
        for it in items:
            if (it.switch is None) != (it.ready is not Ready.SWITCH):
                raise ConfigError(f"item of {it.run.tag!r}: a switch goes with ready "
                                  f"'switch' only, got ready {it.ready} and switch "
                                  f"{it.switch}")
            start = clock.advance_to(it.not_before)
            sw = None
            if it.ready is Ready.SWITCH:
                sw = self._switch(it.switch, agree)
                ready = sw.end_ns
            elif it.ready is Ready.PENDING:
                ready = int(it.pending_ns)
            elif it.ready is Ready.PREFETCHED:
                ready = prefetched.pop(it.run.tag)
            else:
                ready = start
            ready = clock.advance_to(max(ready, start))
            pf = None
            if it.prefetch is not None:
                pf = self._switch(it.prefetch, agree)
                prefetched[it.prefetch.tag] = pf.end_ns
            out.append(ItemDone(start, ready, self._run(it.run, agree), sw, pf))
        return out
