"""The longer texts the commands answer with (help, the queue listing)."""

from __future__ import annotations

from bot.broker import JobQueue, Runner
from bot.delivery import short
from bot.i18n import localized, t
from bot.options import SEED_MAX, STRENGTH_STEPS, Caps
from bot.plain import plain
from bot.replies import done_fraction
from bot.settings import Settings
from bot.validation import format_bytes


def help_text(settings: Settings, caps: Caps, language: str | None = None) -> str:
    """The answer to `help`: the commands, the options and their limits."""
    p = settings.bot.command_prefix
    base = settings.engine.transfer
    limits = settings.engine.limits
    lines = [
        t(language, "help.title"),
        t(language, "help.attach", prefix=p, styles=settings.bot.max_styles),
        t(language, "help.reply", prefix=p),
        t(language, "help.slash"),
        t(language, "help.options", prefix=p),
        t(language, "help.strength", steps=", ".join(t(language, f"step.{s}") for s in STRENGTH_STEPS)),
        t(language, "help.size", size=min(base.size, caps.max_size), most=caps.max_size),
        t(
            language,
            "help.iterations",
            iterations=min(base.iterations, caps.max_iterations),
            most=caps.max_iterations,
        ),
        t(language, "help.color"),
        t(language, "help.seed", most=SEED_MAX),
        t(language, "help.also"),
        t(language, "help.queue", prefix=p),
        t(language, "help.cancel", prefix=p),
        t(language, "help.buttons"),
        t(
            language,
            "help.animation",
            frames=limits.max_frames,
            side=limits.max_frame_side,
        ),
        t(language, "help.community", prefix=p),
        t(
            language,
            "help.images",
            bytes=format_bytes(limits.max_bytes, round_up=False),
            megapixels=f"{limits.max_pixels / 1e6:g}",
        ),
    ]
    return "\n".join(lines)


def no_such_job_text(job_id: str, language: str | None = None) -> str:
    return t(language, "cancel.no_such_job", id=plain(job_id, 16))


def not_yours_text(job_id: str, language: str | None = None) -> str:
    return t(language, "cancel.not_yours", id=job_id)


def elsewhere_text(running: int, waiting: int, language: str | None = None) -> str:
    """Jobs of other servers (and other members' DMs): counts only, never who or what."""
    parts = []
    if running:
        parts.append(t(language, "queue.elsewhere_running", count=running))
    if waiting:
        parts.append(t(language, "queue.elsewhere_waiting", count=waiting))
    return t(language, "queue.elsewhere", what=t(language, "queue.and").join(parts))


def queue_text(
    queue: JobQueue,
    runner: Runner,
    prefix: str,
    *,
    user_id: int = 0,
    guild_id: int = 0,
    language: str | None = None,
) -> str:
    """The answer to `queue`, asked by `user_id` in `guild_id` (0: a DM): what runs and
    what waits, in the order it will run. Jobs of this server and the member's own are
    listed; the rest only counted (server boundaries, issue 11)."""
    lines: list[str] = []
    unavailable = runner.unavailable
    if unavailable is not None:
        note = localized(runner.waiting_note, language)
        lines.append(f"⚠️ {note or t(language, 'queue.out_of_service')}")
    elif runner.ready_count == 0:
        note = localized(runner.waiting_note, language)
        lines.append(f"⏳ {note or t(language, 'queue.warming')}")
    running, waiting = queue.running, queue.waiting
    if not running and not waiting:
        lines.append(t(language, "queue.empty", prefix=prefix))
        return "\n".join(lines)
    shown_running = [j for j in running if j.visible_to(user_id, guild_id)]
    shown_waiting = [j for j in waiting if j.visible_to(user_id, guild_id)]
    if shown_running:
        lines.append(t(language, "queue.running"))
        for job in shown_running:
            p = job.progress
            pct = f"{int(done_fraction(p) * 100)}%" if p else t(language, "queue.starting")
            lines.append(f"▶ `{job.id}` <@{job.user_id}> — {pct} — {short(job.label)}")
    if shown_waiting:
        lines.append(t(language, "queue.waiting", count=len(waiting), most=queue.max_waiting))
        for job in shown_waiting[:20]:
            lines.append(f"{job.position}. `{job.id}` <@{job.user_id}> — {short(job.label)}")
        if len(shown_waiting) > 20:
            lines.append(t(language, "queue.more", count=len(shown_waiting) - 20))
    others_running = len(running) - len(shown_running)
    others_waiting = len(waiting) - len(shown_waiting)
    if others_running or others_waiting:
        lines.append(elsewhere_text(others_running, others_waiting, language))
    return "\n".join(lines)[:1990]
