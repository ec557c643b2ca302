"""The rerun session: input → resume state → bounded stream → workers → ledger → result.

A daemon thread reads input lines in batches (back-pressured by a bounded stream, and
never keeping the process alive if stdin blocks); one task parses them, drops what the
ledger says is done (`admission`), and feeds IDs through a bounded stream to
`concurrency` workers; each worker sends its ID until it settles (`attempts`).

Stopping (`stop`): a signal, an auth failure, a ledger that fails or an outage stops
reading and cancels every wait, so no new request starts; requests in flight finish. When
the ledger fails, the outcomes it cannot take are kept for the summary, and a request
whose `dispatched` record is not durable never leaves.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from typing import BinaryIO

import aiohttp
import anyio
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from orchestrator import __version__
from orchestrator.api.client import AltostratClient
from orchestrator.errors import ConfigError, InputError
from orchestrator.ids import Rejected
from orchestrator.ledger.records import Finished, SessionEnded, SessionStarted, Skipped, utc_now
from orchestrator.ledger.records import Rejected as RejectedRecord
from orchestrator.ledger.replay import ResumeState, replay_file
from orchestrator.ledger.writer import FileOps, LedgerWriter
from orchestrator.outcome import RunResult, Snapshot, StopReason, Tally, exit_code
from orchestrator.pacing.pacer import Pacer
from orchestrator.pacing.retry import Retrying
from orchestrator.rerun.admission import Admitter, Verdict
from orchestrator.rerun.attempts import Attempts
from orchestrator.rerun.dryrun import DryRun
from orchestrator.rerun.plan import plan_of
from orchestrator.rerun.plumbing import Plumbing
from orchestrator.rerun.recorder import Recorder
from orchestrator.rerun.source import Batches, open_source, read_in_background, read_lines
from orchestrator.rerun.stop import Stop
from orchestrator.rerun.wait import NewRun, Waiter, WaitPolicy, new_run_stream
from orchestrator.settings import RerunSettings
from orchestrator.shared.schedule import SharedSchedule, open_shared, peek_limit

log = structlog.get_logger("orchestrator")


class Rerun:
    """One sending session of `orchestrator rerun` over one source and one ledger."""

    def __init__(
        self,
        settings: RerunSettings,
        client: AltostratClient,
        writer: LedgerWriter,
        resume: ResumeState,
        plumbing: Plumbing,
        *,
        shared: SharedSchedule | None = None,
    ) -> None:
        self.settings = settings
        self.tally = Tally()
        self._writer = writer
        self._plumbing = plumbing
        self._clock = plumbing.clock
        self._stop = Stop(settings.base_url)
        self._recorder = Recorder(writer, str(settings.ledger), self._stop)
        self._pacer = Pacer(
            settings.rate,
            plumbing.clock,
            circuit_threshold=settings.circuit_threshold,
            shared=shared,
            max_outage=settings.max_outage,
        )
        # One for reruns and polls alike: a circuit opened by either is counted.
        self._retrying = Retrying(self._pacer, plumbing.backoff, plumbing.rng)
        self._admitter = Admitter(resume.ids, resume.reruns, settings, self.tally)
        self._input_error: str | None = None
        self._pending = 0  # IDs handed to the workers and not yet settled
        self._input_done = False
        self._waiter: Waiter | None = None
        self._new_runs: MemoryObjectSendStream[NewRun] | None = None
        self._finished: MemoryObjectReceiveStream[Finished] | None = None
        if settings.wait:
            self._new_runs, new_runs = new_run_stream()
            finished, self._finished = anyio.create_memory_object_stream[Finished](math.inf)
            policy = WaitPolicy(
                timeout_s=settings.wait_timeout,
                poll_s=settings.poll_interval,
                max_attempts=settings.max_attempts,
            )
            self._waiter = Waiter(
                client,
                self._retrying,
                policy,
                plumbing.clock,
                self._stop,
                new_runs=new_runs,
                finished=finished,
            )
            for original, new_run_id in (resume.unfinished or {}).items():
                self._new_runs.send_nowait(NewRun(original, new_run_id))
            if resume.unfinished:
                log.info("wait.resuming", unfinished=len(resume.unfinished))
        self._attempts = Attempts(
            settings,
            client,
            recorder=self._recorder,
            retrying=self._retrying,
            stop=self._stop,
            tally=self.tally,
            resume=resume,
            plumbing=plumbing,
            new_runs=self._new_runs,
        )

    def snapshot(self) -> Snapshot:
        """The counts so far; cheap, and safe to call from another thread."""
        tally = self.tally
        return Snapshot(
            lines=tally.lines,
            done=tally.lines - self._pending,
            input_done=self._input_done,
            succeeded=tally.succeeded,
            failed=tally.failed_total,
            in_flight=len(self._attempts.in_flight),
            requests=tally.requests,
            rate_limited=tally.by_status.get("429", 0),
            target_rate=self._pacer.bucket.per_second,  # as adaptive pacing has set it
            following=None if self._waiter is None else self._waiter.following,
            ended=sum(tally.finished.values()),
        )

    async def run(self, source: BinaryIO) -> RunResult:
        started = self._clock.now()
        # A ledger that takes not even this stops the run before a line is read.
        self._recorder.record(
            SessionStarted(
                at=utc_now(), version=__version__, source=self.settings.source, pid=os.getpid()
            )
        )
        try:
            async with anyio.create_task_group() as tg:
                if self._plumbing.handle_signals:
                    tg.start_soon(self._stop.watch_signals)
                with self._stop.scope:
                    await self._pipeline(source)
                tg.cancel_scope.cancel()  # the signal watcher has nothing more to watch
        finally:
            self._record_the_rest()
        # Left in flight only by a forced stop: the server may or may not have them.
        self.tally.in_doubt.extend(sorted(self._attempts.in_flight))
        # Read, and stopped before any worker took them (workers settle what they take).
        self.tally.not_sent += self._pending
        self._pending = 0
        self.tally.circuit_opened = self._retrying.circuit_opened
        if self._waiter is not None:
            self.tally.polls = self._waiter.polls
        if self._input_error is not None:
            if self._recorder.error is None:
                raise InputError(self._input_error)
            # The ledger's failure decides the exit code; this one is only told.
            log.error("input.unreadable", source=self.settings.source, error=self._input_error)
        await self._writer.sync()
        if self._writer.failed is not None:
            self._recorder.failed(self._writer.failed)
        result = self._result(started)
        ended = SessionEnded(
            at=utc_now(),
            exit_code=int(exit_code(result)),
            reason=result.reason,
            input_unread=not result.input_done,
        )
        if not self._recorder.record(ended):
            result = self._result(started)
        return result

    def _result(self, started: float) -> RunResult:
        return RunResult(
            tally=self.tally,
            reason=self._stop.reason or StopReason.COMPLETED,
            elapsed_s=self._clock.now() - started,
            ledger=str(self.settings.ledger),
            waited=self._waiter is not None,
            abort_detail=self._stop.detail,
            budget=None if self._pacer.shared is None else self._pacer.shared.report(),
            ledger_error=self._recorder.error,
            input_done=self._input_done,
            base_url=self.settings.base_url,
        )

    async def _pipeline(self, source: BinaryIO) -> None:
        concurrency = self.settings.concurrency
        batches = read_in_background(source)
        ids_send, ids_receive = anyio.create_memory_object_stream[str](concurrency)
        async with anyio.create_task_group() as following:
            if self._waiter is not None and self._finished is not None:
                following.start_soon(self._waiter.run)
                following.start_soon(self._record_all_finished, self._finished)
            async with anyio.create_task_group() as tg:
                for _ in range(concurrency):
                    tg.start_soon(self._worker, ids_receive.clone())
                ids_receive.close()
                await self._feed(batches, ids_send)
            if self._waiter is not None and self._new_runs is not None:
                log.info("wait.following", reruns=self._waiter.following)
                self._new_runs.close()  # every rerun is sent: no new run will come

    async def _feed(self, batches: Batches, ids: MemoryObjectSendStream[str]) -> None:
        async def line(raw: bytes) -> None:
            if (run_id := self._admit(*self._admitter.judge(raw))) is not None:
                self._pending += 1
                await _send(ids, run_id)

        async with ids:
            # What was read before an input error is still sent; it is raised after.
            self._input_error = await read_lines(batches, line)
            self._input_done = self._input_error is None

    def _admit(self, parsed: str | Rejected | None, verdict: Verdict) -> str | None:
        """Act on the verdict on one line, recording a rejection or an is-rerun skip; the
        ID to send, or None."""
        if verdict.action == "send":
            assert isinstance(parsed, str)
            return parsed
        if isinstance(parsed, Rejected):
            log.warning("input.rejected", line=parsed.line, reason=parsed.reason)
            self._recorder.record(
                RejectedRecord(
                    at=utc_now(), line=parsed.line, reason=parsed.reason, input=parsed.input
                )
            )
        elif verdict.why == "is_rerun" and isinstance(parsed, str):
            # Recorded, so that `report` can say why the line went unsent; replay ignores it.
            self._recorder.record(
                Skipped(at=utc_now(), line=self.tally.lines, run_id=parsed, reason="is_rerun")
            )
        return None

    async def _worker(self, ids: MemoryObjectReceiveStream[str]) -> None:
        async with ids:
            while (run_id := await _receive(ids)) is not None:
                try:
                    if self._stop.stopping:
                        self.tally.not_sent += 1  # read, but the run stopped before its turn
                        continue
                    await self._attempts.send(run_id)
                finally:
                    self._pending -= 1

    async def _record_all_finished(self, records: MemoryObjectReceiveStream[Finished]) -> None:
        async for record in records:
            self._record_finished(record)

    def _record_the_rest(self) -> None:
        """Records a forced stop left on their way: the poll was answered, so it is told."""
        if self._finished is None:
            return
        with self._finished:
            while True:
                try:
                    self._record_finished(self._finished.receive_nowait())
                except (anyio.WouldBlock, anyio.EndOfStream):
                    return

    def _record_finished(self, record: Finished) -> None:
        if not self._recorder.record(record):
            self.tally.unrecorded_outcomes[record.original_run_id] = record.outcome
        self.tally.finished[record.outcome] += 1
        if record.outcome != "completed":
            self.tally.unsettled_reruns.setdefault(record.outcome, []).append(
                record.original_run_id
            )
        level = "debug" if record.outcome == "completed" else "warning"
        getattr(log, level)(
            "wait.finished",
            run_id=record.original_run_id,
            new_run_id=record.new_run_id,
            outcome=record.outcome,
            final_status=record.final_status,
            error_message=record.error_message,
        )


# anyio's send and receive always go through the event loop, even when an item or a
# place is ready; trying without waiting first saves that on the hot path.


async def _send(stream: MemoryObjectSendStream[str], item: str) -> None:
    try:
        stream.send_nowait(item)
    except anyio.WouldBlock:
        await stream.send(item)


async def _receive(stream: MemoryObjectReceiveStream[str]) -> str | None:
    """The next item, or None at the end of the stream."""
    try:
        return stream.receive_nowait()
    except anyio.WouldBlock:
        try:
            return await stream.receive()
        except anyio.EndOfStream:
            return None
    except anyio.EndOfStream:
        return None


def _open_ledger(settings: RerunSettings, ops: FileOps | None) -> LedgerWriter:
    try:
        return LedgerWriter(settings.ledger, settings.fsync, ops)
    except OSError as exc:
        raise ConfigError(f"cannot open ledger {settings.ledger}: {exc.strerror or exc}") from None


async def run_rerun(
    settings: RerunSettings, token: str | None, plumbing: Plumbing | None = None
) -> RunResult:
    """Run one `orchestrator rerun` session, or its dry run.

    Raises ConfigError (bad source or ledger path), LedgerLocked or InputError."""
    plumbing = plumbing or Plumbing.default()
    source = open_source(settings.source, plumbing.stdin)
    async with contextlib.AsyncExitStack() as cleanup:
        if settings.source != "-":
            cleanup.callback(source.close)
        if settings.dry_run:
            resume = _resume(settings)
            learned = None
            if plumbing.token is not None:
                learned = await peek_limit(settings.store_spec, settings.base_url, plumbing.token)
            return await DryRun(settings, resume, plumbing, learned).run(source)
        assert token is not None
        writer = _open_ledger(settings, plumbing.ledger_ops)
        cleanup.callback(writer.close)
        resume = _resume(settings)
        shared = await open_shared(
            settings.store_spec, settings.base_url, token, settings.rate, plumbing.clock.now
        )
        if shared is not None:
            cleanup.push_async_callback(shared.close)
        # Nothing runs yet that blocking on the terminal could hold up.
        if plumbing.confirm is not None and not plumbing.confirm(plan_of(settings, resume, shared)):
            log.info("rerun.declined", detail="nothing was sent")
            return RunResult(
                tally=Tally(),
                reason=StopReason.DECLINED,
                elapsed_s=0.0,
                ledger=str(settings.ledger),
                abort_detail="declined at the prompt: nothing was sent",
                base_url=settings.base_url,
            )
        connector = aiohttp.TCPConnector(limit=settings.concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            client = AltostratClient(session, settings.base_url, token, settings.timeout)
            rerun = Rerun(settings, client, writer, resume, plumbing, shared=shared)
            with plumbing.monitor(rerun.snapshot) if plumbing.monitor else contextlib.nullcontext():
                result = await rerun.run(source)
        writer.close()
        if writer.failed is not None and result.ledger_error is None:
            # The last fsync failed: what this session wrote may not be on disk.
            log.error("ledger.unwritable", ledger=str(settings.ledger), error=str(writer.failed))
            result = dataclasses.replace(result, ledger_error=str(writer.failed))
        return result


def _resume(settings: RerunSettings) -> ResumeState:
    """Replay the ledger, and say what this session starts from."""
    resume = replay_file(settings.ledger, unfinished=settings.wait and not settings.dry_run)
    if resume.corrupt_lines:
        log.warning(
            "ledger.corrupt_lines",
            ledger=str(settings.ledger),
            count=resume.corrupt_lines,
            lines=resume.corrupt_shown,
            detail="skipped; an ID whose last record was lost counts as in doubt or new",
        )
    log.info(
        "rerun.starting",
        source=settings.source,
        ledger=str(settings.ledger),
        ledger_ids=len(resume.ids),
        base_url=settings.base_url,
        concurrency=settings.concurrency,
        rate_per_s=settings.rate,
        dry_run=settings.dry_run,
    )
    return resume
