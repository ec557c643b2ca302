"""`orchestrator rerun --dry-run`: what a run would do with each line, on stdout, with
nothing sent and nothing written. The same admission as a real run (`admission`), over
the same ledger, so the plan and the run agree line by line.

Each line's fate is one tab-separated line (`send`, `skip` or `reject`, the subject, the
reason) for grep and cut. A reader that goes away (`| head`) ends the plan quietly.
"""

from __future__ import annotations

import sys
from typing import BinaryIO

import anyio
import structlog

from orchestrator.errors import InputError
from orchestrator.ids import Rejected
from orchestrator.ledger.replay import ResumeState
from orchestrator.outcome import Estimate, RunResult, StopReason, Tally, effective_rate
from orchestrator.rerun.admission import Admitter
from orchestrator.rerun.plumbing import Plumbing
from orchestrator.rerun.source import read_in_background, read_lines
from orchestrator.rerun.stop import Stop
from orchestrator.settings import RerunSettings

log = structlog.get_logger("orchestrator")


class DryRun:
    def __init__(
        self,
        settings: RerunSettings,
        resume: ResumeState,
        plumbing: Plumbing,
        learned_per_s: float | None,
    ) -> None:
        self._settings = settings
        self._plumbing = plumbing
        self._learned_per_s = learned_per_s  # a limit the store knows, for the estimate
        self.tally = Tally()
        self._admitter = Admitter(resume.ids, resume.reruns, settings, self.tally)
        self._stop = Stop(settings.base_url)

    async def run(self, source: BinaryIO) -> RunResult:
        started = self._plumbing.clock.now()
        input_done = False
        error: str | None = None
        async with anyio.create_task_group() as tg:
            if self._plumbing.handle_signals:
                tg.start_soon(self._stop.watch_signals)
            with self._stop.scope:
                error = await read_lines(read_in_background(source), self._line)
                input_done = error is None
            tg.cancel_scope.cancel()  # the signal watcher has nothing more to watch
        if error is not None:
            raise InputError(error)
        tally = self.tally
        return RunResult(
            tally=tally,
            reason=self._stop.reason or StopReason.COMPLETED,
            elapsed_s=self._plumbing.clock.now() - started,
            ledger=str(self._settings.ledger),
            dry_run=True,
            abort_detail=self._stop.detail,
            input_done=input_done,
            base_url=self._settings.base_url,
            estimate=Estimate(
                tally.would_send, effective_rate(self._settings.rate, self._learned_per_s)
            ),
        )

    async def _line(self, raw: bytes) -> None:
        parsed, verdict = self._admitter.judge(raw)
        match verdict.action:
            case "reject":
                assert isinstance(parsed, Rejected)
                self._print("reject", f"line {parsed.line}", parsed.reason)
                log.warning("input.rejected", line=parsed.line, reason=parsed.reason)
            case "skip" | "send":
                assert isinstance(parsed, str)
                assert verdict.why is not None
                if verdict.action == "send":
                    self.tally.would_send += 1
                self._print(verdict.action, parsed, verdict.why)

    def _print(self, action: str, subject: str, why: str) -> None:
        if self._stop.stopping:
            return
        out = self._plumbing.stdout or sys.stdout
        try:
            out.write(f"{action}\t{subject}\t{why}\n")
        except BrokenPipeError:
            # The reader has seen enough (`| head`): the plan ends here, quietly.
            self._stop.request(StopReason.OUTPUT_CLOSED)
